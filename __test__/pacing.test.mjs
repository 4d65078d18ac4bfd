// Pacing the writes: `rateLimit` caps on documents per second (copy and stream), and the adaptive
// `_bulk` size (`batch.adaptive`) as `stats()` shows it. Timings here are lower bounds only: a
// capped sync cannot be faster than its cap, however loaded the machine is.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { serversFor, unique, esDocs, waitFor, nextEvent, withTimeout } = require('./helpers.js')

describe('pacing', () => {
  const ctx = serversFor('pacing')

  /** A sync of one fresh collection, stopped when the test `t` ends. */
  function create(t, label, extra) {
    const db = ctx.mongo.db(unique(label))
    const index = unique(label)
    const sync = new MongoElasticSync({
      name: unique(label),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index }],
      batch: { maxDocs: 50, flushIntervalMs: 50 },
      ...extra,
    })
    t.after(() => sync.stop().catch(() => {}))
    return { coll: db.collection('c'), index, sync }
  }

  test('a copy capped at 100 documents/s takes at least (n − 100) / 100 s and delivers everything', async (t) => {
    const n = 400
    const { coll, index, sync } = create(t, 'capcopy', { mode: 'copy', rateLimit: { docsPerSecond: 100 } })
    await coll.insertMany(Array.from({ length: n }, (_, i) => ({ _id: i, v: 'x'.repeat(100) })))
    const started = performance.now()
    await sync.start()
    await withTimeout(sync.wait(), 60000, 'the capped copy did not finish')
    const seconds = (performance.now() - started) / 1000
    // One second's worth goes at once, the rest at the rate.
    assert.ok(seconds >= (n - 100) / 100, `${n} documents at ≤ 100/s took only ${seconds.toFixed(2)} s`)
    assert.equal((await esDocs(ctx.esUrl, index)).size, n)
    const stats = sync.stats()
    assert.equal(stats.copied, n)
    assert.ok(stats.stages.rateLimitWait.count > 0 && stats.stages.rateLimitWait.totalMs > 1000, JSON.stringify(stats.stages.rateLimitWait))
  })

  test('the stream is capped too: 150 changes at ≤ 50/s take at least 2 s to arrive, all of them', async (t) => {
    const { coll, index, sync } = create(t, 'capstream', { mode: 'stream', rateLimit: { docsPerSecond: 50, bytesPerSecond: 1e6 } })
    const streaming = nextEvent(sync, (e) => e.type === 'state' && e.state === 'streaming')
    await sync.start()
    await streaming
    const started = performance.now()
    await coll.insertMany(Array.from({ length: 150 }, (_, i) => ({ _id: i })))
    await waitFor('the 150 changes', async () => (await esDocs(ctx.esUrl, index)).size === 150, 60000)
    const seconds = (performance.now() - started) / 1000
    assert.ok(seconds >= 2, `150 changes at ≤ 50/s arrived in ${seconds.toFixed(2)} s`)
    assert.ok(sync.stats().stages.rateLimitWait.count > 0)
  })

  test('stats() shows the adaptive _bulk size, which can be turned off', async (t) => {
    const on = create(t, 'adaptive', { mode: 'copy', batch: { maxDocs: 50, adaptive: { enabled: true } } })
    await on.coll.insertMany(Array.from({ length: 120 }, (_, i) => ({ _id: i })))
    await on.sync.start()
    await withTimeout(on.sync.wait(), 60000, 'the copy did not finish')
    const batch = on.sync.stats().adaptiveBatch
    // The local server answers within the 5 s target: the requests stay at the maximum.
    assert.ok(batch && batch.docs >= 10 && batch.docs <= 50 && batch.bytes <= 8 * 1024 * 1024, JSON.stringify(batch))
    assert.equal((await esDocs(ctx.esUrl, on.index)).size, 120)

    const off = create(t, 'fixed', { mode: 'copy', batch: { maxDocs: 50, adaptive: { enabled: false } } })
    await off.coll.insertOne({ _id: 1 })
    await off.sync.start()
    await withTimeout(off.sync.wait(), 60000, 'the copy did not finish')
    assert.equal(off.sync.stats().adaptiveBatch, undefined)
  })

  test('wrong pacing options are ERR_CONFIG naming the option', () => {
    const base = { name: 'x', mongo: { uri: ctx.mongoUrl }, elasticsearch: { node: ctx.esUrl }, collections: ['a.b'] }
    const cases = [
      [{ rateLimit: { docsPerSecond: 0 } }, /^rateLimit\.docsPerSecond: must be a number above 0/],
      [{ rateLimit: { docPerSecond: 5 } }, /^rateLimit\.docPerSecond: unknown option, did you mean `docsPerSecond`/],
      [{ batch: { maxDocs: 20, adaptive: { minDocs: 30 } } }, /^batch\.adaptive\.minDocs: must not exceed batch\.maxDocs \(20\)/],
    ]
    for (const [extra, message] of cases) {
      assert.throws(() => new MongoElasticSync({ ...base, ...extra }), (e) => e.code === 'ERR_CONFIG' && message.test(e.message), JSON.stringify(extra))
    }
  })
})
