// Shaping documents per collection: fields kept, dropped and renamed, Decimal128 as numbers,
// the _id kept in the source, and which change types apply — the same in the copy and the stream.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { isDeepStrictEqual } from 'node:util'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { serversFor, unique, esDocs, waitFor, startStreaming } = require('./helpers.js')
const { Decimal128 } = require('mongodb')

describe('document shaping', () => {
  const ctx = serversFor('shape')

  /** A fresh collection holding `docs`, and a sync of it streaming until the test `t` ends. */
  async function started(t, label, collectionOptions, docs) {
    const db = ctx.mongo.db(unique(label))
    const coll = db.collection('c')
    await coll.insertMany(docs)
    const index = unique(label)
    const { sync } = await startStreaming(t, {
      name: unique(label),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index, ...collectionOptions }],
      batch: { flushIntervalMs: 100 },
    })
    return { coll, index, sync }
  }

  const user = (id) => ({
    _id: id,
    name: `user ${id}`,
    password: 'hash',
    profile: { email: `${id}@x.io`, age: 30 },
    orders: [{ sku: 'a', cost: 1, note: 'n' }, { sku: 'b', cost: 2 }],
    price: Decimal128.fromString('12.50'),
  })
  const expected = (id) => ({
    name: `user ${id}`,
    profile: {}, // like MongoDB's $rename, the emptied parent stays
    email: `${id}@x.io`,
    orders: [{ sku: 'a', cost: 1 }, { sku: 'b', cost: 2 }],
    price: 12.5,
    mongoId: id,
  })

  test('include, exclude, rename, decimalAsNumber and keepIdAs give the same documents in copy and stream', async (t) => {
    const { coll, index } = await started(
      t,
      'fields',
      {
        fields: { include: ['name', 'profile.email', 'orders', 'price', 'mongoId'], exclude: ['orders.note'], rename: { 'profile.email': 'email' } },
        decimalAsNumber: true,
        keepIdAs: 'mongoId',
      },
      [user('copied')],
    )
    await coll.insertOne(user('streamed'))
    const docs = await waitFor('both documents', async () => {
      const d = await esDocs(ctx.esUrl, index)
      return d.size === 2 && d
    })
    assert.deepEqual(docs.get('copied'), expected('copied'))
    assert.deepEqual(docs.get('streamed'), expected('streamed'))
  })

  test("operations without 'delete' keep deleted documents (an archive index)", async (t) => {
    const { coll, index } = await started(t, 'archive', { operations: ['insert', 'update', 'replace'] }, [{ _id: 1, v: 1 }, { _id: 2, v: 1 }])
    await coll.deleteOne({ _id: 1 })
    await coll.updateOne({ _id: 2 }, { $set: { v: 2 } })
    await coll.insertOne({ _id: 3, v: 1 })
    const docs = await waitFor('the update and the insert', async () => {
      const d = await esDocs(ctx.esUrl, index)
      return d.size === 3 && d.get('2').v === 2 && d
    })
    assert.deepEqual(docs.get('1'), { v: 1 }, 'the deleted document stays')
  })

  test('a filter selects documents in the copy and the stream; updating a document out of it deletes it', async (t) => {
    const { coll, index } = await started(t, 'filter', { filter: { status: 'active', since: { $gte: { $date: '2024-01-01T00:00:00Z' } } } }, [
      { _id: 1, status: 'active', since: new Date('2024-06-01') },
      { _id: 2, status: 'inactive', since: new Date('2024-06-01') },
      { _id: 3, status: 'active', since: new Date('2023-06-01') },
      { _id: 4, status: 'active', since: new Date('2025-01-01') },
    ])
    const ids = async () => [...(await esDocs(ctx.esUrl, index)).keys()].sort()
    assert.deepEqual(await ids(), ['1', '4'], 'the copy takes only matching documents')
    await coll.insertMany([{ _id: 5, status: 'active', since: new Date('2025-02-01') }, { _id: 6, status: 'inactive', since: new Date('2025-02-01') }])
    await coll.updateOne({ _id: 1 }, { $set: { status: 'inactive' } })
    await coll.updateOne({ _id: 2 }, { $set: { status: 'active' } })
    await waitFor('the filtered changes', async () => JSON.stringify(await ids()) === JSON.stringify(['2', '4', '5']))
  })

  test('added constant and derived fields, then flattening, are the same in copy and stream', async (t) => {
    const before = new Date()
    const { coll, index } = await started(
      t,
      'added',
      { fields: { add: { 'meta.source': '$namespace', 'meta.coll': '$collection', team: 'search', price: '$$9', syncedAt: '$syncedAt' }, flatten: '__' } },
      [{ _id: 'copied', a: { b: { c: 1 } }, list: [{ x: { y: 1 } }] }],
    )
    await coll.insertOne({ _id: 'streamed', a: { b: { c: 1 } }, list: [{ x: { y: 1 } }] })
    const docs = await waitFor('both documents', async () => {
      const d = await esDocs(ctx.esUrl, index)
      return d.size === 2 && d
    })
    for (const id of ['copied', 'streamed']) {
      const { syncedAt, ...rest } = docs.get(id)
      assert.deepEqual(rest, { a__b__c: 1, list: [{ x: { y: 1 } }], meta__source: `${coll.dbName}.c`, meta__coll: 'c', team: 'search', price: '$9' }, id)
      assert.ok(new Date(syncedAt) >= new Date(before.getTime() - 1000) && new Date(syncedAt) <= new Date(), `${id}: syncedAt ${syncedAt}`)
    }
  })

  test('namespace patterns choose collections, and pick up ones created while streaming', async (t) => {
    const dbName = unique('ns')
    const db = ctx.mongo.db(dbName)
    await db.collection('orders').insertMany([{ _id: 1, v: 'o' }])
    await db.collection('tmp_scratch').insertMany([{ _id: 1, v: 't' }])
    await db.collection('users').insertMany([{ _id: 1, v: 'u' }])
    const prefix = unique('nsidx')
    const { sync, events } = await startStreaming(t, {
      name: unique('ns'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      indexTemplate: `${prefix}-{coll}`,
      // users is listed explicitly with its own index; the others come from the patterns.
      collections: [{ namespace: `${dbName}.users`, index: `${prefix}-people` }],
      namespaces: { include: [`${dbName}\\..*`], exclude: ['.*\\.tmp_.*'], discoveryIntervalMs: 500 },
      batch: { flushIntervalMs: 100 },
    })
    assert.deepEqual([...(await esDocs(ctx.esUrl, `${prefix}-orders`)).entries()], [['1', { v: 'o' }]])
    assert.deepEqual([...(await esDocs(ctx.esUrl, `${prefix}-people`)).entries()], [['1', { v: 'u' }]])
    assert.equal((await fetch(`${ctx.esUrl}/${prefix}-tmp_scratch`)).status, 404, 'excluded collections are not synced')
    // A collection created while the sync runs: its first documents and later changes arrive.
    await db.collection('invoices').insertMany([{ _id: 1, v: 'i1' }, { _id: 2, v: 'i2' }])
    await waitFor('the new collection to be found', () => events.some((e) => e.type === 'change' && e.operation === 'discovered' && e.namespace === `${dbName}.invoices`), 30000)
    await db.collection('invoices').updateOne({ _id: 2 }, { $set: { v: 'i2b' } })
    await db.collection('invoices').insertOne({ _id: 3, v: 'i3' })
    await waitFor('the new collection in its index', async () => {
      const d = await esDocs(ctx.esUrl, `${prefix}-invoices`).catch(() => new Map())
      return d.size === 3 && d.get('2').v === 'i2b' && d.get('3').v === 'i3'
    }, 30000)
    // The new collection's copy put the sync back to 'copying' for a moment; it streams again after it.
    await waitFor('the sync to stream again', () => sync.stats().state === 'streaming', 30000)
    assert.ok(events.some((e) => e.type === 'progress' && e.done && e.namespace === `${dbName}.invoices`), 'the new collection was copied')
  })

  test('namespaces.defaults shape every collection the patterns find, copied or created while streaming', async (t) => {
    const dbName = unique('nsd')
    const db = ctx.mongo.db(dbName)
    await db.collection('a').insertMany([{ _id: 1, v: 1, secret: 's', keep: true }, { _id: 2, v: 2, keep: false }])
    // Its name cannot be part of an index name: passed over with one warning, the others go on.
    await db.collection('has space').insertOne({ _id: 1, keep: true })
    const prefix = unique('nsd')
    const { events } = await startStreaming(t, {
      name: unique('nsd'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      namespaces: {
        include: [`${dbName}\\..*`],
        discoveryIntervalMs: 500,
        defaults: { index: `${prefix}-{db}-{coll}`, filter: { keep: true }, fields: { exclude: ['secret', 'keep'], add: { src: '$namespace' } } },
      },
      batch: { flushIntervalMs: 100 },
    })
    const indexOf = (coll) => `${prefix}-${dbName}-${coll}`.toLowerCase()
    const docsOf = async (coll) => Object.fromEntries(await esDocs(ctx.esUrl, indexOf(coll)).catch(() => new Map()))
    // The copy: the filter, the field rules and the index template of the defaults.
    assert.deepEqual(await docsOf('a'), { 1: { v: 1, src: `${dbName}.a` } })
    // A collection created while streaming gets the same settings, for its own namespace.
    await db.collection('b').insertMany([{ _id: 1, v: 10, secret: 'x', keep: true }, { _id: 2, v: 20, keep: false }])
    await waitFor('b to be found', () => events.some((e) => e.type === 'change' && e.operation === 'discovered' && e.namespace === `${dbName}.b`), 30000)
    // Streamed changes: a document updated into the filter, an insert, one outside the filter.
    await db.collection('b').updateOne({ _id: 2 }, { $set: { keep: true } })
    await db.collection('a').insertMany([{ _id: 3, v: 3, secret: 's', keep: true }, { _id: 4, v: 4, keep: false }])
    const want = { a: { 1: { v: 1, src: `${dbName}.a` }, 3: { v: 3, src: `${dbName}.a` } }, b: { 1: { v: 10, src: `${dbName}.b` }, 2: { v: 20, src: `${dbName}.b` } } }
    const got = {}
    await waitFor('both collections shaped by the defaults', async () => {
      got.a = await docsOf('a')
      got.b = await docsOf('b')
      return isDeepStrictEqual(got, want)
    }, 30000).catch((e) => assert.fail(`${e.message}: ${JSON.stringify(got)}`))
    const passedOver = events.filter((e) => e.type === 'warning' && e.namespace === `${dbName}.has space`)
    assert.equal(passedOver.length, 1, 'warned once, not at every look for new collections')
    assert.match(passedOver[0].message, /is not synced: namespaces\.defaults\.index: index name ".*has space" contains ' '/)
    assert.ok(!events.some((e) => e.type === 'change' && e.namespace === `${dbName}.has space`))
  })

  test('bad shaping options are ERR_CONFIG errors naming the field', () => {
    const base = { name: 'x', mongo: { uri: ctx.mongoUrl }, elasticsearch: { node: ctx.esUrl } }
    assert.throws(() => new MongoElasticSync({ ...base, collections: [{ namespace: 'a.b', fields: { exclude: ['a..b'] } }] }), (e) => e.code === 'ERR_CONFIG' && /collections\[0\]\.fields\.exclude/.test(e.message))
    assert.throws(() => new MongoElasticSync({ ...base, collections: [{ namespace: 'a.b', fields: { include: ['_id'] } }] }), (e) => e.code === 'ERR_CONFIG' && /keepIdAs/.test(e.message))
    assert.throws(() => new MongoElasticSync({ ...base, collections: [{ namespace: 'a.b', operations: ['upsert'] }] }), (e) => e.code === 'ERR_CONFIG' && /collections\[0\]\.operations/.test(e.message))
    assert.throws(() => new MongoElasticSync({ ...base, collections: [{ namespace: 'a.b', filter: [1] }] }), (e) => e.code === 'ERR_CONFIG' && /collections\[0\]\.filter/.test(e.message))
    assert.throws(() => new MongoElasticSync({ ...base, collections: [{ namespace: 'a.b', fields: { add: { x: '$nope' } } }] }), (e) => e.code === 'ERR_CONFIG' && /collections\[0\]\.fields\.add\.x/.test(e.message))
    assert.throws(() => new MongoElasticSync({ ...base, collections: [{ namespace: 'a.b', fields: { flatten: '' } }] }), (e) => e.code === 'ERR_CONFIG' && /fields\.flatten/.test(e.message))
    assert.throws(() => new MongoElasticSync({ ...base, namespaces: { include: ['shop.(' ] } }), (e) => e.code === 'ERR_CONFIG' && /namespaces\.include\[0\]/.test(e.message))
    assert.throws(() => new MongoElasticSync({ ...base }), (e) => e.code === 'ERR_CONFIG' && /collections/.test(e.message), 'no collections and no patterns')
    const withDefaults = (defaults) => () => new MongoElasticSync({ ...base, namespaces: { include: ['shop\\..*'], defaults } })
    assert.throws(withDefaults({ namespace: 'shop.x' }), (e) => e.code === 'ERR_CONFIG' && /namespaces\.defaults\.namespace/.test(e.message))
    assert.throws(withDefaults({ fields: { add: { x: '$nope' } } }), (e) => e.code === 'ERR_CONFIG' && /namespaces\.defaults\.fields\.add\.x/.test(e.message))
    assert.throws(withDefaults({ index: 'logs {coll}' }), (e) => e.code === 'ERR_CONFIG' && /namespaces\.defaults\.index/.test(e.message))
    assert.throws(withDefaults({ pipline: 'p' }), (e) => e.code === 'ERR_CONFIG' && /namespaces\.defaults.*pipline/.test(e.message))
    assert.throws(withDefaults({ fields: { flatten: 3 } }), (e) => e.code === 'ERR_CONFIG' && /namespaces\.defaults\.fields\.flatten/.test(e.message))
  })
})
