// Recovery of the source: a MongoDB restart during the copy, and what the copy reads when the
// URI prefers secondaries.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { setup, unique, waitFor, nextEvent, waitForMirror } = require('./helpers.js')
const { restartMongo } = require('../scripts/local-servers.js')

test('source recovery', async (t) => {
  const ctx = await setup('recovery')
  t.after(() => ctx.teardown())

  await t.test('a MongoDB restart during the copy: the copy goes on from its saved ranges', { skip: !ctx.started && 'MONGO_URL points at a server this test cannot restart' }, async () => {
    const coll = ctx.mongo.db(unique('copy_restart')).collection('c')
    const filler = 'x'.repeat(200)
    await coll.insertMany(Array.from({ length: 4000 }, (_, i) => ({ _id: i, v: i, filler })))
    const index = unique('copy_restart')
    const sync = new MongoElasticSync({
      name: unique('copy_restart'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${coll.dbName}.c`, index }],
      batch: { maxDocs: 100, concurrency: 1, flushIntervalMs: 100 },
      retry: { initialDelayMs: 100, maxDelayMs: 1000 },
    })
    const events = []
    sync.onEvent((e) => events.push(e))
    t.after(() => sync.stop().catch(() => {}))
    const copying = nextEvent(sync, (e) => e.type === 'batch' && e.phase === 'copy', 60000)
    await sync.start()
    await copying
    await restartMongo(ctx.servers)
    await waitFor('the copy to finish', () => events.find((e) => e.type === 'progress' && e.done) || events.find((e) => e.type === 'state' && e.state === 'failed'), 180000)
    const failed = events.find((e) => e.type === 'state' && e.state === 'failed')
    assert.ok(!failed, `the sync did not fail: ${JSON.stringify(failed?.error)}`)
    await waitForMirror(ctx, coll, index, (d) => d, 120000)
    assert.equal(sync.stats().state, 'streaming')
    assert.ok(events.some((e) => e.type === 'retry'), 'the interruption was retried')
  })
})
