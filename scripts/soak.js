#!/usr/bin/env node
// Soak: the sync in a child process under a steady mixed load (inserts, updates, deletes, and
// collections created and dropped in turn, over a fixed set of names) for SOAK_MINUTES (default 60). Every 10 s it samples
// the child's resident memory, open file descriptors, established TCP connections and threads
// (from /proc; Linux) and the tasks alive in its engine's runtime (its `stats().runtimeTasks`). After the warm-up it fits a least-squares line to each series and fails
// when a slope is over its bound; at the end every collection's index must equal it.
//
//   npm run soak                              # one hour, local servers started here
//   SOAK_MINUTES=20 npm run soak              # shorter
//   SOAK_OPS_PER_SEC=150 SOAK_SEED=7 npm run soak
//
// The figures (load held, duration, slopes) are printed as one JSON line at the end ("soak: …").
'use strict'

const fs = require('node:fs')
// The test helpers' seeded PRNG and child-process runner (the sync runs as `__test__/fixtures/run-sync.js`).
const { esDocs, rng, runChild } = require('../__test__/helpers.js')

/** Bounds on the least-squares slope after the warm-up, per minute. */
const DEFAULT_BOUNDS = {
  rssBytesPerMin: 512 * 1024, // 0.5 MiB a minute: 30 MiB an hour at most
  fds: 0.2,
  connections: 0.2,
  threads: 0.05,
  tasks: 0.5,
}

/** Least-squares slope of `ys` over `xs`. */
function slope(xs, ys) {
  const n = xs.length
  if (n < 2) return 0
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my)
    den += (xs[i] - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}

/** Socket inodes of ESTABLISHED TCP connections on this machine (IPv4 and IPv6), or only of those to `remotePort`. */
function establishedInodes(remotePort) {
  const remote = remotePort && `:${remotePort.toString(16).toUpperCase().padStart(4, '0')}`
  const inodes = new Set()
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols.length > 9 && cols[3] === '01' && (!remote || cols[2].endsWith(remote))) inodes.add(cols[9])
    }
  }
  return inodes
}

/** RSS, open fds, established TCP connections and threads of process `pid`, from /proc. */
function sampleProcess(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1])
  const fds = fs.readdirSync(`/proc/${pid}/fd`)
  const established = establishedInodes()
  let connections = 0
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m && established.has(m[1])) connections++
    } catch {
      // closed between the listing and the read
    }
  }
  return { rssBytes: field('VmRSS') * 1024, fds: fds.length, connections, threads: field('Threads') }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** The runtime's live task count in the child's latest `fixture-stats` line (null before one). */
function latestTasks(events) {
  for (let i = events.length - 1; i >= 0; i--) if (events[i].type === 'fixture-stats') return events[i].runtimeTasks ?? null
  return null
}

/** What the sync's events tell: streaming yet, a failure, errors, batches, dead letters. */
function seenIn(events) {
  return {
    streaming: events.some((e) => e.type === 'state' && e.state === 'streaming'),
    failed: events.find((e) => (e.type === 'state' && e.state === 'failed') || e.type === 'start-failed') ?? null,
    errors: events.filter((e) => e.type === 'error'),
    batches: events.filter((e) => e.type === 'batch').length,
    deadLetters: events.filter((e) => e.type === 'deadLetter').length,
  }
}

/**
 * The writer: every 200 ms a bulk write of `opsPerSec / 5` mixed changes to one of the live
 * collections; every `rotateEverySec` a collection is created (with a few documents) and, past
 * `liveCollections`, the oldest one dropped (names cycle over `liveCollections + 1`).
 */
function startWriter(db, { opsPerSec, rotateEverySec, liveCollections, random }) {
  const live = []
  let created = 0
  let nextId = 0
  const totals = { ops: 0, bulkWrites: 0, failures: 0, created: 0, dropped: 0 }
  let running = true
  const create = async () => {
    // A fixed set of names, each dropped and created again in turn: a dropped collection stays
    // followed (to pick it up if it comes back), so new names would each add a change stream.
    const name = `c${created++ % (liveCollections + 1)}`
    await db.collection(name).insertMany(Array.from({ length: 50 }, () => ({ _id: nextId++, v: 0, s: 'seed' })))
    live.push({ name, ids: nextId })
    totals.created++
    if (live.length > liveCollections) {
      const old = live.shift()
      await db.collection(old.name).drop()
      totals.dropped++
    }
  }
  const tick = async () => {
    const target = live[Math.floor(random() * live.length)]
    const coll = db.collection(target.name)
    const ops = []
    const per = Math.max(1, Math.round(opsPerSec / 5))
    for (let k = 0; k < per; k++) {
      const id = Math.floor(random() * nextId)
      const r = random()
      if (r < 0.5) ops.push({ updateOne: { filter: { _id: id }, update: { $inc: { v: 1 }, $set: { s: `u${k}` } } } })
      else if (r < 0.8) ops.push({ insertOne: { document: { _id: nextId++, v: 0, s: 'new', pad: 'x'.repeat(Math.floor(random() * 400)) } } })
      else ops.push({ deleteOne: { filter: { _id: id } } })
    }
    await coll.bulkWrite(ops, { ordered: false })
    totals.ops += ops.length
    totals.bulkWrites++
  }
  const done = (async () => {
    for (let i = 0; i < Math.min(liveCollections, 2); i++) await create()
    let lastRotate = Date.now()
    while (running) {
      try {
        if (Date.now() - lastRotate >= rotateEverySec * 1000) {
          lastRotate = Date.now()
          await create()
        } else await tick()
      } catch {
        totals.failures++
      }
      await sleep(200)
    }
  })()
  return {
    live,
    totals,
    stop: async () => {
      running = false
      await done
      return totals
    },
  }
}

/**
 * Runs a soak against `mongo` (a connected MongoClient) and the servers at `mongoUrl` / `esUrl`.
 * Resolves with the report; `report.ok` is false (and `report.problems` says why) on failure.
 */
async function runSoak({ mongo, mongoUrl, esUrl, minutes, opsPerSec = 60, seed = Date.now() % 1e9, warmupFraction = 0.25, bounds = DEFAULT_BOUNDS, rotateEverySec = 60, log = () => {} }) {
  const random = rng(seed)
  const dbName = `soak_${process.pid}_${Date.now().toString(36)}`
  const db = mongo.db(dbName)
  const options = {
    name: dbName,
    mongo: { uri: mongoUrl },
    elasticsearch: { node: esUrl },
    namespaces: { include: [`${dbName}\\..*`], discoveryIntervalMs: 2000 },
    indexTemplate: '{db}-{coll}',
    onDrop: 'deleteIndex',
    batch: { flushIntervalMs: 200 },
    retry: { initialDelayMs: 100, maxDelayMs: 2000 },
  }
  const writer = startWriter(db, { opsPerSec, rotateEverySec, liveCollections: 3, random })
  const run = runChild(options, 'run', { ...process.env, SYNC_FIXTURE_STATS_MS: '5000' })
  const samples = []
  const started = Date.now()
  const endAt = started + minutes * 60_000
  const problems = []
  try {
    while (Date.now() < endAt && !seenIn(run.events).failed && run.child.exitCode === null) {
      await sleep(Math.min(10_000, Math.max(0, endAt - Date.now())))
      if (run.child.exitCode !== null) break
      const s = { atMin: (Date.now() - started) / 60_000, ...sampleProcess(run.child.pid), tasks: latestTasks(run.events) }
      samples.push(s)
      log(`soak ${s.atMin.toFixed(1)} min: rss ${(s.rssBytes / 2 ** 20).toFixed(1)} MiB, fds ${s.fds}, connections ${s.connections}, threads ${s.threads}, tasks ${s.tasks}, ops ${writer.totals.ops}`)
    }
  } finally {
    await writer.stop()
  }
  const seen = seenIn(run.events)
  if (seen.failed) problems.push(`the sync failed: ${JSON.stringify(seen.failed)}`)
  if (run.child.exitCode !== null && !seen.failed) problems.push(`the sync exited (${run.child.exitCode})`)
  if (seen.errors.length > 0) problems.push(`${seen.errors.length} error events, first: ${JSON.stringify(seen.errors[0])}`)
  if (seen.deadLetters > 0) problems.push(`${seen.deadLetters} dead letters`)

  const after = samples.filter((s) => s.atMin >= minutes * warmupFraction)
  const xs = after.map((s) => s.atMin)
  const slopes = {
    rssBytesPerMin: slope(xs, after.map((s) => s.rssBytes)),
    fds: slope(xs, after.map((s) => s.fds)),
    connections: slope(xs, after.map((s) => s.connections)),
    threads: slope(xs, after.map((s) => s.threads)),
    tasks: slope(xs, after.map((s) => s.tasks)),
  }
  if (after.some((s) => !Number.isInteger(s.tasks))) problems.push('the runtime task count was not reported (stats().runtimeTasks)')
  if (after.length < 3) problems.push(`only ${after.length} samples after the warm-up`)
  for (const [key, value] of Object.entries(slopes)) {
    if (value > bounds[key]) problems.push(`${key} grows by ${value.toFixed(3)} a minute after the warm-up (bound ${bounds[key]})`)
  }

  let mirror = null
  if (problems.length === 0) mirror = await waitForMirrors(db, esUrl, writer.live.map((c) => c.name), dbName)
  if (mirror && !mirror.same) problems.push(`the indexes differ from the collections: ${mirror.detail}`)

  run.child.kill('SIGTERM')
  const [code] = await Promise.race([run.exited, sleep(60_000).then(() => ['timeout'])])
  if (run.child.exitCode === null) run.child.kill('SIGKILL')
  if (code !== 0 && problems.length === 0) problems.push(`the sync did not exit cleanly on SIGTERM (${code})`)
  await db.dropDatabase().catch(() => {})

  const durationMin = (Date.now() - started) / 60_000
  const totals = writer.totals
  const report = {
    ok: problems.length === 0,
    problems,
    seed,
    minutes: Number(durationMin.toFixed(2)),
    load: { opsPerSecTarget: opsPerSec, opsPerSecHeld: Number((totals.ops / (durationMin * 60)).toFixed(1)), ...totals },
    samples: samples.length,
    warmupMin: minutes * warmupFraction,
    slopesPerMin: { rssBytes: Math.round(slopes.rssBytesPerMin), fds: round3(slopes.fds), connections: round3(slopes.connections), threads: round3(slopes.threads), tasks: round3(slopes.tasks) },
    bounds,
    rssMiB: samples.length ? { first: mib(samples[0].rssBytes), last: mib(samples.at(-1).rssBytes), max: mib(Math.max(...samples.map((s) => s.rssBytes))) } : null,
    last: samples.at(-1) ?? null,
    batches: seen.batches,
  }
  return report
}

const round3 = (v) => Number(v.toFixed(3))
const mib = (b) => Number((b / 2 ** 20).toFixed(1))

/** Waits (up to 3 minutes) until every live collection's index holds exactly its documents. */
async function waitForMirrors(db, esUrl, names, dbName) {
  const deadline = Date.now() + 180_000
  let detail = ''
  for (;;) {
    detail = ''
    for (const name of names) {
      const index = `${dbName}-${name}`.toLowerCase()
      // Read whole (a scroll), however many documents: one page would stop at 10,000.
      const hits = await esDocs(esUrl, index).catch((e) => e)
      if (hits instanceof Error) {
        detail += `${index}: ${hits.message}; `
        continue
      }
      const docs = await db.collection(name).find({}).toArray()
      let differ = docs.length !== hits.size ? 1 : 0
      for (const d of docs) {
        const got = hits.get(String(d._id))
        if (!got || got.v !== d.v || got.s !== d.s) differ++
      }
      if (differ > 0) detail += `${name}: ${docs.length} documents, ${hits.size} in the index, ${differ} differ; `
    }
    if (!detail) return { same: true }
    if (Date.now() > deadline) return { same: false, detail }
    await sleep(1000)
  }
}

async function main() {
  const { MongoClient } = require('mongodb')
  const { startServers } = require('./local-servers')
  const minutes = Number(process.env.SOAK_MINUTES || 60)
  const opsPerSec = Number(process.env.SOAK_OPS_PER_SEC || 60)
  const seed = Number(process.env.SOAK_SEED || Date.now() % 1e9)
  const servers = await startServers({ name: 'soak' })
  const mongo = new MongoClient(servers.mongoUrl)
  await mongo.connect()
  try {
    const report = await runSoak({ mongo, mongoUrl: servers.mongoUrl, esUrl: servers.esUrl, minutes, opsPerSec, seed, log: (m) => process.stderr.write(`${m}\n`) })
    process.stdout.write(`soak: ${JSON.stringify(report)}\n`)
    if (!report.ok) {
      process.stderr.write(`soak FAILED (seed ${seed}): ${report.problems.join('; ')}\n`)
      process.exitCode = 1
    }
  } finally {
    await mongo.close()
    await servers.stop()
  }
}

module.exports = { runSoak, slope, sampleProcess, establishedInodes, DEFAULT_BOUNDS }

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`soak error: ${e.stack || e}\n`)
    process.exit(1)
  })
}
