// Part 1 (--only copy), raw limits: a plain driver read of the collection, and a `_bulk` load of
// the same documents pre-serialised (1,000 per request), one request at a time and two in flight.
'use strict'

const { esRequest, countDocs, deleteIndex } = require('../lib/es')
const { withTimeout, round } = require('../lib/util')

async function readAll(coll, findOpts, expect) {
  const t0 = performance.now()
  let n = 0
  let firstMs = null
  await withTimeout(
    (async () => {
      for await (const doc of coll.find({}, findOpts)) if (doc && n++ === 0) firstMs = performance.now() - t0
    })(),
    120000 + expect * 2,
    'driver read',
  )
  const seconds = (performance.now() - t0) / 1000
  if (n !== expect) throw new Error(`read ${n} of ${expect}`)
  return { docsPerSec: round(n / seconds), seconds: round(seconds, 2), firstDocMs: round(firstMs) }
}

async function bulkLoad(run, index, batches, concurrency) {
  const { esUrl, copyTimeoutMs: timeoutMs } = run
  run.indices.add(index)
  await esRequest(esUrl, 'PUT', `/${index}`, {})
  const deadline = performance.now() + timeoutMs
  const t0 = performance.now()
  let next = 0
  let sent = 0
  let failed = 0
  let timedOut = false
  const worker = async () => {
    while (next < batches.length) {
      if (performance.now() > deadline) {
        timedOut = true
        return
      }
      const b = batches[next++]
      const r = await esRequest(esUrl, 'POST', `/${index}/_bulk`, b.body, { ndjson: true, timeoutMs: 120000 })
      if (r.status !== 200) throw new Error(`_bulk: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`)
      if (r.body.errors) failed += r.body.items.filter((it) => it.index && it.index.error).length
      sent += b.count
    }
  }
  try {
    await Promise.all(Array.from({ length: concurrency }, worker))
    const seconds = (performance.now() - t0) / 1000
    const indexed = await countDocs(esUrl, index)
    return {
      docsPerSec: round(sent / seconds),
      seconds: round(seconds, 1),
      docs: sent,
      indexed,
      ...(failed ? { note: `${failed} items failed` } : {}),
      ...(timedOut ? { error: `stopped after ${Math.round(timeoutMs / 1000)} s` } : {}),
    }
  } finally {
    await deleteIndex(esUrl, index)
  }
}

/** results.limits; `min` is min(best driver read, `_bulk` load one at a time). */
async function limits(run) {
  const { db, N, runId, step } = run
  const L = {}
  L.readDefault = await step('raw limit: driver read (default batches)', () => readAll(db.collection('docs'), {}, N))
  L.read1000 = await step('raw limit: driver read (batchSize 1000)', () => readAll(db.collection('docs'), { batchSize: 1000 }, N))
  // Not a limit (the copy tools sort for resumability): shows what sorting costs the server.
  L.readSorted = await step('driver read sorted by _id (batchSize 1000)', () => readAll(db.collection('docs'), { batchSize: 1000, sort: { _id: 1 } }, N))
  if (L.readSorted && !L.readSorted.error) L.readSorted.note = 'sorted by _id, as the engine and mongo2elastic read; not used as a limit'
  L.load = await step('raw limit: _bulk load, one request at a time', () => bulkLoad(run, `bench-${runId}-load1`, run.ndjsonBatches, 1))
  const sub = run.ndjsonBatches.slice(0, Math.max(1, Math.ceil(Math.min(N, 10000) / 1000)))
  L.load2 = await step('raw limit: _bulk load, two in flight', () => bulkLoad(run, `bench-${runId}-load2`, sub, 2))
  if (L.load2 && !L.load2.error) L.load2.note = `first ${sub.reduce((s, b) => s + b.count, 0)} docs`
  const read = Math.max(L.readDefault?.docsPerSec || 0, L.read1000?.docsPerSec || 0)
  L.min = read && L.load?.docsPerSec ? Math.min(read, L.load.docsPerSec) : null
  return L
}

module.exports = { limits, readAll }
