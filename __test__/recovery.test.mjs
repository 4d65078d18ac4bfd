// Recovery of the source: a MongoDB restart during the copy, and what the copy reads when the
// URI prefers secondaries.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { setup, unique, waitFor, nextEvent, waitForMirror } = require('./helpers.js')
const { restartMongo } = require('../scripts/local-servers.js')
const { startWireProxy } = require('./wire-proxy.js')

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

  // The local server is a single node, so a lagging secondary cannot be shown here; what can
  // be checked is that every read that must not see an older state than the stream asks for
  // a causally consistent one (readConcern.afterClusterTime), whichever member serves it.
  await t.test('with readPreference=secondaryPreferred, the copy and the filter lookups read no older than the stream', async () => {
    const url = new URL(ctx.mongoUrl)
    const proxy = await startWireProxy(url.hostname, Number(url.port))
    t.after(() => proxy.close())
    const db = ctx.mongo.db(unique('secondary'))
    const coll = db.collection('c')
    await coll.insertMany(Array.from({ length: 20 }, (_, i) => ({ _id: i, kind: 'keep', v: i })))
    const index = unique('secondary')
    const name = unique('secondary')
    const sync = new MongoElasticSync({
      name,
      mongo: { uri: `mongodb://127.0.0.1:${proxy.port}/?directConnection=true&readPreference=secondaryPreferred` },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index, filter: { kind: 'keep' } }],
      batch: { flushIntervalMs: 100 },
    })
    t.after(() => sync.stop().catch(() => {}))
    const streaming = nextEvent(sync, (e) => e.type === 'state' && e.state === 'streaming', 60000)
    await sync.start()
    await streaming
    await coll.updateOne({ _id: 3 }, { $set: { v: 100 } })
    await waitForMirror(ctx, coll, index)
    const startAt = (await ctx.mongo.db('mongo_elastic_sync').collection('checkpoints').findOne({ _id: `${name}:${db.databaseName}.c` })).startAt
    const finds = proxy.commands.filter((c) => c.find === 'c' && c.$db === db.databaseName)
    const isLookup = (c) => '_id' in c.filter || '_id' in (c.filter.$and?.[0] ?? {})
    const copy = finds.filter((c) => !isLookup(c))
    const lookups = finds.filter(isLookup)
    assert.ok(copy.length >= 1 && lookups.length >= 1, `the copy and a lookup were seen: ${JSON.stringify(finds)}`)
    for (const find of finds) {
      const after = find.readConcern?.afterClusterTime
      assert.ok(after, `every find is causally after a known time: ${JSON.stringify(find)}`)
    }
    for (const find of copy) assert.ok(!find.readConcern.afterClusterTime.lessThan(startAt), 'the copy reads no older than its start point')
    assert.equal(sync.stats().state, 'streaming')
  })
})
