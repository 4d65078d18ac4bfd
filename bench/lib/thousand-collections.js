// A thousand collections in one database: one change stream per collection against one change
// stream for the database (`mongo.databaseStreamThreshold`).
//
// The engine runs in this process in stream mode into a file output (no search server in the
// path), once per variant on the same collections: `databaseStreamThreshold: 10000` (a stream per
// collection, each keeping a getMore waiting on a pooled connection of its own) and the default
// (past 50 followed collections, one stream of the database with a server-side `$match`).
// Measured per variant: this process's TCP connections to MongoDB (those of the harness's own
// client subtracted, counted before the engine started) and its resident memory, both after the
// warm-up (one insert per collection, until every one has arrived) and a few idle seconds with
// idle pooled connections closed after a second (`maxIdleTimeMS=1000`), the time to reach
// `streaming`, and the latency of one insert at a time in a collection picked at random, until
// its record is in the file (polled every 5 ms).
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { percentile } = require('./latency')
const { tail } = require('./many-collections')
const { establishedInodes } = require('../../scripts/soak')

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Established TCP connections of this process to `port` (IPv4 and IPv6), from /proc. */
function connectionsTo(port) {
  const inodes = establishedInodes(port)
  let n = 0
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/self/fd/${fd}`))
      if (m && inodes.has(m[1])) n++
    } catch {
      // closed between the listing and the read
    }
  }
  return n
}

/** Waits until every id of `ids` shows in the file read by `read`. */
async function arrived(read, ids, timeoutMs, what) {
  const deadline = performance.now() + timeoutMs
  let pending = ids
  while (pending.length) {
    const text = read()
    pending = pending.filter((id) => !text.includes(`"id":"${id}"`))
    if (pending.length && performance.now() > deadline) throw new Error(`${what}: ${pending.length} of ${ids.length} not in the file after ${timeoutMs / 1000} s`)
    if (pending.length) await sleep(20)
  }
}

/** One variant: the engine started, warmed up, measured, probed, stopped. */
async function measureVariant(o, variant, v, names, file) {
  const { MongoElasticSync } = require(o.addonPath)
  const port = Number(new URL(o.mongoUrl.replace(/^mongodb(\+srv)?:/, 'http:')).port) || 27017
  const own = connectionsTo(port)
  const rssBefore = process.memoryUsage().rss
  const uri = `${o.mongoUrl}${o.mongoUrl.includes('?') ? '&' : '?'}maxIdleTimeMS=1000`
  const sync = new MongoElasticSync({
    name: `bench-${o.runId}-thousand${v}`,
    mongo: variant.threshold === undefined ? { uri } : { uri, databaseStreamThreshold: variant.threshold },
    outputs: [{ type: 'file', path: file, fsync: 'never' }],
    collections: names.map((n) => `${o.db.databaseName}.${n}`),
    checkpoint: { database: o.checkpointDb },
    mode: 'stream',
    batch: { flushIntervalMs: 50 },
  })
  const t0 = performance.now()
  const mark = (what) => o.log?.(`    ${variant.name}: ${what} after ${Math.round(performance.now() - t0)} ms`)
  const live = new Promise((resolve, reject) => {
    sync.onEvent((e) => e.type === 'state' && e.state === 'streaming' && resolve())
    setTimeout(() => reject(new Error(`${variant.name}: not streaming within 180 s`)), 180000).unref()
  })
  live.catch(() => {}) // awaited below; start() itself may outlast the bound
  await Promise.race([sync.start(), live])
  try {
    await live
    const startMs = Math.round(performance.now() - t0)
    mark('streaming')
    const read = tail(file)
    for (const [i, name] of names.entries()) await o.db.collection(name).insertOne({ _id: `warm-${v}-${i}` })
    mark('warm-up inserts written')
    await arrived(read, names.map((_, i) => `warm-${v}-${i}`), 180000, `${variant.name} warm-up`)
    const warmMs = Math.round(performance.now() - t0) - startMs
    mark('warm-up inserts in the file')
    await sleep(4000)
    const connections = connectionsTo(port) - own
    const rssMiB = Math.round((process.memoryUsage().rss - rssBefore) / 2 ** 20)
    const latencies = []
    for (let p = 0; p < o.probes; p++) {
      const id = `probe-${v}-${p}`
      const coll = o.db.collection(names[(p * 7919) % names.length])
      const t = performance.now()
      await coll.insertOne({ _id: id })
      await arrived(read, [id], 30000, `${variant.name} probe`)
      latencies.push(Math.round(performance.now() - t))
      await sleep(o.gapMs)
    }
    const sorted = [...latencies].sort((a, b) => a - b)
    return { name: variant.name, startMs, warmMs, connections, rssGrowthMiB: rssMiB, p50Ms: percentile(sorted, 50), p95Ms: percentile(sorted, 95), maxMs: sorted[sorted.length - 1] }
  } finally {
    await sync.stop()
  }
}

/**
 * @param {object} o
 * @param {string} o.addonPath   directory of the addon copy (index.js + .node)
 * @param {string} o.mongoUrl
 * @param {import('mongodb').Db} o.db   a database of the run's own
 * @param {string} o.checkpointDb
 * @param {string} o.runId
 * @param {boolean} [o.onlyDefault]  only the database-stream variant
 * @param {(line: string) => void} [o.log]  progress lines (seeding, streaming, warm-up)
 */
async function measureThousandCollections(o) {
  const collections = o.collections ?? 1000
  const opts = { probes: 40, gapMs: 100, ...o }
  const names = Array.from({ length: collections }, (_, i) => `k_${i}`)
  const seeding = performance.now()
  for (const name of names) await o.db.collection(name).insertOne({ _id: 'seed' })
  const seedMs = Math.round(performance.now() - seeding)
  o.log?.(`    ${collections} collections created in ${seedMs} ms`)
  const variants = [
    { name: 'one stream per collection (databaseStreamThreshold: 10000)', threshold: 10000 },
    { name: 'one stream for the database (the default threshold, 50)', threshold: undefined },
  ].filter((variant) => !o.onlyDefault || variant.threshold === undefined)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-bench-thousand-'))
  const runs = []
  try {
    for (const [v, variant] of variants.entries()) {
      try {
        runs.push(await measureVariant(opts, variant, v, names, path.join(dir, `v${v}.ndjson`)))
      } catch (e) {
        runs.push({ name: variant.name, error: e.message })
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return { collections, seedMs, probes: opts.probes, gapMs: opts.gapMs, runs }
}

module.exports = { measureThousandCollections, connectionsTo }
