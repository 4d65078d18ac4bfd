// Elasticsearch refusing writes for a while, as a real cluster does: a closed index (400
// index_closed_exception per item) and a write block during a shrink or clone (403
// cluster_block_exception per item). Both pass: the items are retried with backoff and `retry`
// events, never dead-lettered, and the checkpoint never moves past them.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { setup, unique, es, waitFor, startStreaming, waitForMirror } = require('./helpers.js')

const REFUSALS = [
  {
    label: 'a closed index (400 index_closed_exception)',
    type: 'index_closed_exception',
    block: (ctx, index) => es(ctx.esUrl, 'POST', `/${index}/_close`),
    unblock: (ctx, index) => es(ctx.esUrl, 'POST', `/${index}/_open`),
  },
  {
    label: 'a write block (403 cluster_block_exception)',
    type: 'cluster_block_exception',
    block: (ctx, index) => es(ctx.esUrl, 'PUT', `/${index}/_settings`, { 'index.blocks.write': true }),
    unblock: (ctx, index) => es(ctx.esUrl, 'PUT', `/${index}/_settings`, { 'index.blocks.write': false }),
  },
]

test('temporary refusals of single items', async (t) => {
  const ctx = await setup('es-refusals')
  t.after(() => ctx.teardown())

  for (const refusal of REFUSALS) {
    await t.test(`${refusal.label}: retried, never dead-lettered, never checkpointed past`, async (t) => {
      const coll = ctx.mongo.db(unique('refusal')).collection('c')
      const index = unique('refusal')
      await coll.insertMany(Array.from({ length: 20 }, (_, i) => ({ _id: i, v: 0 })))
      const options = {
        name: unique('refusal'),
        mongo: { uri: ctx.mongoUrl },
        elasticsearch: { node: ctx.esUrl },
        collections: [{ namespace: `${coll.dbName}.${coll.collectionName}`, index }],
        batch: { flushIntervalMs: 50 },
        retry: { initialDelayMs: 50, maxDelayMs: 200 },
      }
      const first = await startStreaming(t, options)
      await waitForMirror(ctx, coll, index)

      // Refused while running: retried until the refusal ends, then written.
      assert.equal((await refusal.block(ctx, index)).status, 200)
      await coll.insertMany(Array.from({ length: 5 }, (_, i) => ({ _id: 100 + i, v: 1 })))
      await coll.updateOne({ _id: 3 }, { $set: { v: 3 } })
      await waitFor(`retries of items refused with ${refusal.type}`, () =>
        first.events.some((e) => e.type === 'retry' && e.cause.includes(refusal.type)),
      )
      assert.equal((await refusal.unblock(ctx, index)).status, 200)
      await waitForMirror(ctx, coll, index)

      // Refused when the sync stops: nothing past the refused items is checkpointed, so the
      // next start writes them.
      assert.equal((await refusal.block(ctx, index)).status, 200)
      const retriesBefore = first.events.filter((e) => e.type === 'retry').length
      await coll.insertMany(Array.from({ length: 5 }, (_, i) => ({ _id: 200 + i, v: 2 })))
      await coll.deleteOne({ _id: 4 })
      await waitFor('the refused batch to be retried', () => first.events.filter((e) => e.type === 'retry').length > retriesBefore)
      await first.sync.stop()
      assert.deepEqual(
        first.events.filter((e) => e.type === 'deadLetter'),
        [],
        'no refused item is dead-lettered',
      )
      assert.equal(first.sync.stats().deadLetters, 0)
      assert.equal((await refusal.unblock(ctx, index)).status, 200)

      const second = await startStreaming(t, options)
      await waitForMirror(ctx, coll, index)
      assert.equal(second.sync.stats().deadLetters, 0)
      await second.sync.stop()
    })
  }
})
