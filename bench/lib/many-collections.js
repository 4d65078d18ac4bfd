// Many collections: the latency of one change when the engine follows many collections at once.
//
// Every followed collection keeps a change-stream getMore waiting (up to 500 ms) on a pooled
// connection, so the pool size decides whether a change in any collection is read at once or
// waits for a connection. The engine runs twice in this process, on the same collections: with
// its default pool, and with `maxPoolSize=10` (the driver's default) in the URI. It writes to a
// file output (no fsync), so that the search server's own stalls do not hide the read path.
// After an untimed warm-up insert in every collection, one probe insert at a time, spread over
// the collections, each timed from just before the insert to the moment its record is in the
// file (polled every 5 ms).
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { percentile } = require('./latency')

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Appended text of `file` since the last call, for a tailing reader. */
function tail(file) {
  let offset = 0
  let text = ''
  return () => {
    if (!fs.existsSync(file)) return text
    const size = fs.statSync(file).size
    if (size > offset) {
      const fd = fs.openSync(file, 'r')
      const buf = Buffer.alloc(size - offset)
      fs.readSync(fd, buf, 0, buf.length, offset)
      fs.closeSync(fd)
      offset = size
      text += buf.toString('utf8')
    }
    return text
  }
}

/**
 * @param {object} o
 * @param {string} o.addonPath   directory of the addon copy (index.js + .node)
 * @param {string} o.mongoUrl
 * @param {import('mongodb').Db} o.db   a database of the run's own
 * @param {string} o.checkpointDb
 * @param {string} o.runId
 */
async function measureManyCollections(o) {
  const { MongoElasticSync } = require(o.addonPath)
  const collections = o.collections ?? 40
  const probes = o.probes ?? 40
  const gapMs = o.gapMs ?? 250
  const names = Array.from({ length: collections }, (_, i) => `many_${i}`)
  for (const name of names) await o.db.collection(name).insertOne({ _id: 'seed' })
  const variants = [
    { name: 'default pool (100 + one per listed collection)', uri: o.mongoUrl },
    { name: 'maxPoolSize=10 (the driver default)', uri: `${o.mongoUrl}${o.mongoUrl.includes('?') ? '&' : '?'}maxPoolSize=10` },
  ]
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-bench-many-'))
  const runs = []
  try {
    for (const [v, variant] of variants.entries()) {
      const file = path.join(dir, `v${v}.ndjson`)
      const sync = new MongoElasticSync({
        name: `bench-${o.runId}-many${v}`,
        mongo: { uri: variant.uri },
        outputs: [{ type: 'file', path: file, fsync: 'never' }],
        collections: names.map((n) => `${o.db.databaseName}.${n}`),
        checkpoint: { database: o.checkpointDb },
        mode: 'stream',
        batch: { flushIntervalMs: 50 },
      })
      let streaming
      const live = new Promise((resolve, reject) => {
        streaming = resolve
        setTimeout(() => reject(new Error('the engine did not reach streaming within 60 s')), 60000).unref()
      })
      sync.onEvent((e) => e.type === 'state' && e.state === 'streaming' && streaming())
      await sync.start()
      try {
        await live
        // Warm-up, untimed: one insert per collection, until every stream has delivered one
        // (the local server's first writes after many streams open take seconds).
        const read = tail(file)
        for (const [i, name] of names.entries()) await o.db.collection(name).insertOne({ _id: `warm-${v}-${i}` })
        const warmDeadline = performance.now() + 60000
        while (names.some((_, i) => !read().includes(`"id":"warm-${v}-${i}"`))) {
          if (performance.now() > warmDeadline) throw new Error(`${variant.name}: the warm-up inserts did not all arrive within 60 s`)
          await sleep(20)
        }
        const latencies = []
        for (let p = 0; p < probes; p++) {
          const id = `probe-${v}-${p}`
          const coll = o.db.collection(names[(p * 7) % collections])
          const t0 = performance.now()
          await coll.insertOne({ _id: id })
          const deadline = t0 + 30000
          while (!read().includes(`"id":"${id}"`)) {
            if (performance.now() > deadline) throw new Error(`${variant.name}: probe ${id} not in the file after 30 s`)
            await sleep(5)
          }
          latencies.push(Math.round(performance.now() - t0))
          await sleep(gapMs)
        }
        const sorted = [...latencies].sort((a, b) => a - b)
        runs.push({ name: variant.name, probes, p50Ms: percentile(sorted, 50), p95Ms: percentile(sorted, 95), maxMs: sorted[sorted.length - 1], latenciesMs: latencies })
      } finally {
        await sync.stop()
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return { collections, probes, gapMs, runs }
}

module.exports = { measureManyCollections, tail }
