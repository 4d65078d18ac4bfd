// Modes: copy only (a one-shot reindex that ends by itself), stream only (from now or from a
// given time), and copy progress with rate and ETA.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { serversFor, unique, esDocs, waitFor, nextEvent, withTimeout } = require('./helpers.js')

describe('modes', () => {
  const ctx = serversFor('modes')

  /** A sync of one fresh collection, stopped when the test `t` ends. */
  function create(t, label, extra) {
    const db = ctx.mongo.db(unique(label))
    const index = unique(label)
    const name = unique(label)
    const sync = new MongoElasticSync({
      name,
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index }],
      batch: { maxDocs: 100, flushIntervalMs: 100 },
      ...extra,
    })
    const events = []
    sync.onEvent((e) => events.push(e))
    t.after(() => sync.stop().catch(() => {}))
    return { coll: db.collection('c'), index, sync, events, name }
  }

  test("mode 'copy' copies, reports progress with rate and ETA, then stops by itself", async (t) => {
    const { coll, index, sync, events, name } = create(t, 'copyonly', { mode: 'copy', copyReaders: 4, copyRangeMinDocs: 100 })
    await coll.insertMany(Array.from({ length: 1500 }, (_, i) => ({ _id: i, v: i })))
    await sync.start()
    await withTimeout(sync.wait(), 60000, 'the copy-only sync did not finish')
    assert.equal(sync.stats().state, 'stopped')
    assert.equal(sync.stats().copied, 1500)
    assert.equal((await esDocs(ctx.esUrl, index)).size, 1500)
    const states = events.filter((e) => e.type === 'state').map((e) => e.state)
    assert.ok(!states.includes('streaming'), `never streams (${states})`)
    const checkpoint = await ctx.mongo.db('mongo_elastic_sync').collection('checkpoints').findOne({ _id: `${name}:${coll.dbName}.c` })
    assert.equal(checkpoint.copyRanges.length, 4, 'the copy was split into 4 _id ranges read in parallel')
    assert.ok(checkpoint.copyRanges.every((r) => r.done))
    const done = events.find((e) => e.type === 'progress' && e.done)
    assert.equal(done.copied, 1500)
    assert.ok(done.rate > 0 && done.etaSeconds === 0, JSON.stringify(done))
  })

  test("mode 'stream' copies nothing and follows changes from now", async (t) => {
    const { coll, index, sync } = create(t, 'streamonly', { mode: 'stream' })
    await coll.insertMany([{ _id: 'old1' }, { _id: 'old2' }])
    const streaming = nextEvent(sync, (e) => e.type === 'state' && e.state === 'streaming')
    await sync.start()
    await streaming
    await coll.insertOne({ _id: 'new' })
    await coll.updateOne({ _id: 'old1' }, { $set: { touched: true } })
    const docs = await waitFor('the changes', async () => {
      const d = await esDocs(ctx.esUrl, index)
      return d.size === 2 && d
    })
    assert.deepEqual([...docs.keys()].sort(), ['new', 'old1'])
    assert.equal(sync.stats().copied, 0)
  })

  test("mode 'stream': a change made as soon as start() resolves is synced, in every collection", async (t) => {
    const db = ctx.mongo.db(unique('streamnow'))
    const names = Array.from({ length: 12 }, (_, i) => `c${i}`)
    for (const n of names) await db.collection(n).insertOne({ _id: 'before' })
    const prefix = unique('streamnow')
    const syncName = unique('streamnow')
    const sync = new MongoElasticSync({
      name: syncName,
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: names.map((n) => `${db.databaseName}.${n}`),
      indexTemplate: `${prefix}-{coll}`,
      mode: 'stream',
      batch: { flushIntervalMs: 100 },
    })
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    // "Now" is the moment start() resolved, for every collection, however late its task runs:
    // each collection's start point is saved by then.
    const checkpoints = ctx.mongo.db('mongo_elastic_sync').collection('checkpoints')
    const saved = await checkpoints.find({ _id: { $in: names.map((n) => `${syncName}:${db.databaseName}.${n}`) } }).toArray()
    assert.equal(saved.length, names.length, 'a saved start point for every collection when start() resolves')
    for (const n of names) await db.collection(n).insertOne({ _id: 'after' })
    await waitFor('every collection\'s change', async () => {
      const all = await Promise.all(names.map((n) => esDocs(ctx.esUrl, `${prefix}-${n}`).catch(() => new Map())))
      return all.every((d) => d.has('after'))
    }, 30000)
    const all = await Promise.all(names.map((n) => esDocs(ctx.esUrl, `${prefix}-${n}`)))
    assert.ok(all.every((d) => d.size === 1), 'nothing from before start() was copied')
  })

  test("mode 'stream' with startAt replays the changes made since then", async (t) => {
    const { coll, index, sync } = create(t, 'startat', { mode: 'stream', startAt: new Date(Date.now() - 2000).toISOString() })
    await coll.insertMany([{ _id: 'before-start-1' }, { _id: 'before-start-2' }])
    await sync.start()
    await waitFor('the earlier changes', async () => (await esDocs(ctx.esUrl, index)).size === 2)
  })

  test("mode 'stream' with namespace patterns follows a new collection from before it was found", async (t) => {
    const dbName = unique('streamns')
    const prefix = unique('streamnsidx')
    const sync = new MongoElasticSync({
      name: unique('streamns'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      mode: 'stream',
      indexTemplate: `${prefix}-{coll}`,
      namespaces: { include: [`${dbName}\\..*`], discoveryIntervalMs: 1000 },
      batch: { flushIntervalMs: 100 },
    })
    const events = []
    sync.onEvent((e) => events.push(e))
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    // Created and written to before the sync can have seen it: no copy in this mode, yet
    // nothing is missed, since the stream starts where the collection was last seen absent.
    const coll = ctx.mongo.db(dbName).collection('fresh')
    await coll.insertMany([{ _id: 1, v: 'a' }, { _id: 2, v: 'b' }])
    await coll.updateOne({ _id: 1 }, { $set: { v: 'a2' } })
    await waitFor('the new collection to be found', () => events.some((e) => e.type === 'change' && e.operation === 'discovered'), 30000)
    await coll.deleteOne({ _id: 2 })
    await coll.insertOne({ _id: 3, v: 'c' })
    await waitFor('its changes in the index', async () => {
      const d = await esDocs(ctx.esUrl, `${prefix}-fresh`).catch(() => new Map())
      return d.size === 2 && d.get('1')?.v === 'a2' && d.get('3')?.v === 'c'
    }, 30000)
    assert.equal(sync.stats().copied, 0, 'nothing was copied')
  })

  test('bad mode options are ERR_CONFIG errors', (t) => {
    assert.throws(() => create(t, 'bad', { mode: 'sometimes' }), (e) => e.code === 'ERR_CONFIG' && /^mode:/.test(e.message))
    assert.throws(() => create(t, 'bad', { startAt: '2026-01-01T00:00:00Z' }), (e) => e.code === 'ERR_CONFIG' && /startAt/.test(e.message))
    assert.throws(() => create(t, 'bad', { mode: 'stream', startAt: 'yesterday' }), (e) => e.code === 'ERR_CONFIG' && /startAt/.test(e.message))
  })
})
