// The Node idioms through `require()` of the package's own name (CommonJS users); the ES
// module twin, with more cases, is node-api.test.mjs.
const test = require('node:test')
const assert = require('node:assert/strict')
const { EventEmitter } = require('node:events')
const { name: PACKAGE } = require('../package.json')
const { MongoElasticSync, SyncError, isSyncError } = require(PACKAGE)
const { setup, unique, withTimeout } = require('./helpers.js')

test('require(): events, listeners that throw, events(), start({ signal }), asyncDispose, SyncError', async (t) => {
  const ctx = await setup('node-api-cjs')
  t.after(() => ctx.teardown())
  const db = ctx.mongo.db(unique('cjs'))
  const coll = db.collection('c')
  await coll.insertMany([{ _id: 1 }, { _id: 2 }])
  const namespace = `${db.databaseName}.c`
  const sync = new MongoElasticSync({
    name: unique('cjs'),
    mongo: { uri: ctx.mongoUrl },
    elasticsearch: { node: ctx.esUrl },
    collections: [{ namespace, index: unique('cjs') }],
    batch: { flushIntervalMs: 100 },
  })
  t.after(() => sync.stop().catch(() => {}))
  assert.ok(sync instanceof EventEmitter)
  await assert.rejects(sync.stop(), (e) => e instanceof SyncError && e.code === 'ERR_STATE')

  const errors = []
  sync.on('error', (e) => errors.push(e))
  sync.on('state', () => {
    throw new TypeError('state listener boom')
  })
  const batches = []
  sync.on('batch', (e) => batches.push(e))
  const controller = new AbortController()
  const seen = []
  const iterated = (async () => {
    for await (const event of sync.events({ signal: controller.signal })) {
      seen.push(event)
      if (event.type === 'state' && event.state === 'streaming') await coll.insertOne({ _id: 3 })
      if (event.type === 'batch' && event.phase === 'stream') return 'a streamed batch'
    }
    return 'ended'
  })()

  await sync.start({ signal: controller.signal })
  assert.equal(await withTimeout(iterated, 60000, 'no streamed batch'), 'a streamed batch')
  assert.ok(seen.some((e) => e.type === 'state' && e.state === 'streaming'))
  assert.ok(batches.some((e) => e.phase === 'copy') && batches.some((e) => e.phase === 'stream'))
  assert.ok(errors.length >= 2 && errors.every((e) => isSyncError(e) && e.code === 'ERR_LISTENER' && e.cause instanceof TypeError))
  const c = sync.stats().collections[namespace]
  assert.deepEqual([c.phase, c.copied, c.streamed], ['streaming', 2, 1])

  await sync[Symbol.asyncDispose]()
  assert.equal(sync.stats().state, 'stopped')
  await sync.wait()
  controller.abort() // after the sync stopped: nothing left to stop
  await sync[Symbol.asyncDispose]() // disposing of a stopped sync is a no-op
  assert.equal(sync.stats().collections[namespace].phase, 'stopped')
})
