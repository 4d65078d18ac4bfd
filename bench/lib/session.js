// One benchmark run: the results skeleton, a copy of the addon, the servers and the database,
// steps (timed; a failure is recorded, never thrown) and cleaning up on every way out. Needs the
// bench dependencies: require it after ensureDeps().
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { MongoClient } = require('mongodb')

const { ROOT } = require('./options')
const { depVersions } = require('./deps')
const { DEFAULT_SEED } = require('../dataset')
const { killAll } = require('./proc')
const { esRequest, deleteIndex } = require('./es')
const { addonInfo } = require('./addon-info')
const { cleanRedis } = require('./redis')
const { log, withTimeout, round } = require('./util')

function machine() {
  return {
    cpuCount: os.cpus().length,
    cpuModel: os.cpus()[0]?.model?.trim() ?? 'unknown',
    cpus: os.cpus().map((c) => ({ model: c.model.trim(), mhz: c.speed })),
    memoryMb: Math.round(os.totalmem() / 1048576),
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    loadAvgAtStart: os.loadavg().map((v) => round(v, 2)),
  }
}

/**
 * Every engine run uses a copy of the addon taken now, so a rebuild in the repo during the run
 * (others compile here too) cannot mix two builds into one set of figures.
 */
function copyAddon(dir) {
  const addonDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-bench-addon-'))
  for (const f of fs.readdirSync(dir)) {
    if (f === 'index.js' || f.endsWith('.node')) fs.copyFileSync(path.join(dir, f), path.join(addonDir, f))
  }
  return addonDir
}

/** The run's state, shared by its parts: options, results, servers, database, what to clean up. */
function newRun(opts) {
  const seed = opts.seed ?? DEFAULT_SEED
  const runId = Date.now().toString(36)
  const errors = []
  const results = {
    date: new Date().toISOString(),
    machine: machine(),
    options: { docs: opts.docs, streamDocs: opts.streamDocs, updates: opts.updates, seed, only: opts.only ? [...opts.only] : null, skipMongo2elastic: opts.skipM2e },
    addon: { dir: opts.addon, ...addonInfo(opts.addon) },
    versions: depVersions(),
    errors,
  }
  if (!results.addon.file) throw new Error(`no addon (*.node) in ${opts.addon}: run npm run build first`)
  const run = {
    opts,
    seed,
    runId,
    dbName: `bench_${runId}`,
    results,
    addonDir: copyAddon(opts.addon),
    servers: null, // the local servers (or MONGO_URL / ES_URL)
    mongo: null,
    db: null,
    fakeEs: null, // while the overhead part runs
    indices: new Set(), // every index a part made, deleted at the end
    wants: (part) => !opts.only || opts.only.has(part),
    step: (name, fn) => step(errors, name, fn),
  }
  run.cleanup = cleaner(run)
  return run
}

async function step(errors, name, fn) {
  log(`▶ ${name}`)
  const t = performance.now()
  try {
    const r = await fn()
    log(`  ✓ ${name} (${((performance.now() - t) / 1000).toFixed(1)} s)`)
    return r
  } catch (e) {
    log(`  ✗ ${name}: ${e.message}`)
    errors.push({ step: name, message: e.message.split('\n')[0] })
    return { error: e.message.split('\n')[0] }
  }
}

/** The run's cleanup: idempotent, for the normal end, errors and signals alike. */
function cleaner(run) {
  let cleaning = null
  return () =>
    (cleaning ??= (async () => {
      killAll()
      if (run.fakeEs) await run.fakeEs.close().catch(() => {})
      // Remove what this run made (matters when MONGO_URL / ES_URL point at servers that stay).
      if (run.mongo) await withTimeout(run.mongo.db(run.dbName).dropDatabase(), 10000, 'drop').catch(() => {})
      if (run.servers) for (const i of run.indices) await deleteIndex(run.servers.esUrl, i)
      await cleanRedis(run.runId).catch(() => {})
      if (run.mongo) await run.mongo.close().catch(() => {})
      if (run.servers) await run.servers.stop().catch(() => {})
      fs.rmSync(run.addonDir, { recursive: true, force: true })
    })())
}

/** Ctrl-C and SIGTERM stop the children and the servers, then end the process. */
function cleanUpOnSignals(run) {
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      log(`\n${sig}: stopping children and servers …`)
      killAll()
      withTimeout(run.cleanup(), 15000, 'cleanup')
        .catch(() => {})
        .finally(() => process.exit(130))
    })
  }
}

/** Starts the servers, connects to MongoDB and records what both report. */
async function connect(run) {
  const { startServers } = require(path.join(ROOT, 'scripts', 'local-servers.js'))
  const servers = (run.servers = await withTimeout(startServers({ name: 'bench' }), 180000, 'starting the local servers'))
  run.mongoUrl = servers.mongoUrl
  run.esUrl = servers.esUrl
  run.serverPids = servers.started ? servers.pids || {} : {}
  log(`servers: ${run.mongoUrl} ${run.esUrl}`)
  run.mongo = await MongoClient.connect(run.mongoUrl, { serverSelectionTimeoutMS: 15000 })
  run.db = run.mongo.db(run.dbName)
  const esInfo = await esRequest(run.esUrl, 'GET', '/')
  const build = await run.db.admin().command({ buildInfo: 1 }).catch(() => ({}))
  run.results.servers = {
    mongo: `${servers.started ? 'SecantusDB (local)' : 'MONGO_URL'} reporting MongoDB ${build.version ?? '?'}`,
    es: `${servers.started ? 'osmem-server (local)' : 'ES_URL'} reporting ${esInfo.body?.version?.distribution ?? 'elasticsearch'} ${esInfo.body?.version?.number ?? '?'}`,
  }
}

module.exports = { newRun, cleanUpOnSignals, connect }
