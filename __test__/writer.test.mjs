// The Elasticsearch writer as an operator sees it: index management, routing, pipelines,
// compression, authentication, and the server's identity.
import { describe, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { serversFor, unique, es, esDocs, startStreaming, waitFor, waitForMirror } = require('./helpers.js')
const { startFaultProxy } = require('./fault-proxy.js')

describe('Elasticsearch writer', () => {
  const ctx = serversFor('writer')
  let proxy
  before(async () => {
    proxy = await startFaultProxy(ctx.esUrl)
    ctx.beforeTeardown(() => proxy.close())
  })

  /** `n` of a compound `_id` `{ …, n }`, from its Elasticsearch id (canonical extended JSON). */
  const numberOf = (esId) => Number(JSON.parse(esId).n.$numberInt)

  /** A sync with these options streaming until the test `t` ends. */
  const started = (t, options) =>
    startStreaming(t, { mongo: { uri: ctx.mongoUrl }, elasticsearch: { node: ctx.esUrl }, batch: { flushIntervalMs: 100 }, ...options })

  test('indices are created with the configured settings, mappings and alias; routing and templates apply', async (t) => {
    const db = ctx.mongo.db(unique('idx'))
    await db.collection('orders').insertMany([
      { _id: { tenant: { id: 't1' }, n: 1 }, price: 10 },
      { _id: { tenant: { id: 't2' }, n: 2 }, price: 20 },
    ])
    await db.collection('users').insertOne({ _id: 'u1', name: 'ann' })
    const alias = unique('orders-read')
    const { events } = await started(t, {
      name: unique('idx'),
      indexTemplate: '{db}-{coll}',
      collections: [
        {
          namespace: `${db.databaseName}.orders`,
          settings: { number_of_shards: 1 },
          mappings: { properties: { price: { type: 'keyword' } } },
          alias,
          routing: '_id.tenant.id',
        },
        `${db.databaseName}.users`,
      ],
    })
    const ordersIndex = `${db.databaseName}-orders`
    const mapping = await es(ctx.esUrl, 'GET', `/${ordersIndex}/_mapping`)
    assert.equal(mapping.body[ordersIndex].mappings.properties.price.type, 'keyword')
    assert.deepEqual(Object.keys((await es(ctx.esUrl, 'GET', `/_alias/${alias}`)).body), [ordersIndex])
    assert.equal((await esDocs(ctx.esUrl, `${db.databaseName}-users`)).size, 1, 'the template names the other index')
    await db.collection('orders').insertOne({ _id: { tenant: { id: 't3' }, n: 3 }, price: 30 })
    const hits = await waitFor('the three orders', async () => {
      const h = (await es(ctx.esUrl, 'POST', `/${ordersIndex}/_search`, { query: { match_all: {} }, size: 10 })).body.hits.hits
      return h.length === 3 && h
    })
    assert.deepEqual(hits.map((h) => [numberOf(h._id), h._routing]).sort(), [[1, 't1'], [2, 't2'], [3, 't3']])
    const connected = events.find((e) => e.type === 'connected')
    assert.ok(connected && connected.distribution && connected.version, JSON.stringify(connected))
  })

  test('routing by a field of _id on a 4-shard index: deletes, also of a document updated out of the filter, are routed', async (t) => {
    const db = ctx.mongo.db(unique('route'))
    const orders = db.collection('orders')
    const id = (tenant, n) => ({ tenant, n })
    await orders.insertMany([1, 2, 3, 4].map((n) => ({ _id: id(`t${n}`, n), kind: 'keep' })))
    const index = unique('routed')
    const { events } = await started(t, {
      name: unique('route'),
      collections: [{ namespace: `${db.databaseName}.orders`, index, settings: { number_of_shards: 4 }, routing: '_id.tenant', filter: { kind: 'keep' } }],
    })
    const left = async () => [...(await esDocs(ctx.esUrl, index)).keys()].map(numberOf).sort()
    await waitFor('the copy', async () => (await left()).length === 4)
    await orders.deleteOne({ _id: id('t1', 1) })
    await orders.updateOne({ _id: id('t2', 2) }, { $set: { kind: 'other' } })
    // A delete without its routing misses the document (404 not_found) and leaves it.
    await waitFor('the routed deletes', async () => (await left()).join() === '3,4', 60000)
    const stream = events.filter((e) => e.type === 'batch' && e.phase === 'stream')
    assert.equal(stream.reduce((n, e) => n + e.deleted, 0), 2, JSON.stringify(stream))
    assert.equal(stream.reduce((n, e) => n + e.notFound, 0), 0)
  })

  test('a delete of a document the index does not hold counts as notFound, not deleted', async (t) => {
    const db = ctx.mongo.db(unique('nf'))
    const coll = db.collection('c')
    await coll.insertMany([{ _id: 1, kind: 'other' }, { _id: 2, kind: 'keep' }])
    const index = unique('nf')
    const { events } = await started(t, { name: unique('nf'), collections: [{ namespace: `${db.databaseName}.c`, index, filter: { kind: 'keep' } }] })
    await coll.deleteOne({ _id: 1 })
    await coll.deleteOne({ _id: 2 })
    const stream = await waitFor('both deletes', () => {
      const b = events.filter((e) => e.type === 'batch' && e.phase === 'stream')
      return b.reduce((n, e) => n + e.deleted + e.notFound, 0) === 2 && b
    })
    assert.equal(stream.reduce((n, e) => n + e.deleted, 0), 1, 'the document the copy wrote')
    assert.equal(stream.reduce((n, e) => n + e.notFound, 0), 1, 'the one the filter kept out')
  })

  test('an existing index whose mappings disagree gives a clear ERR_CONFIG', async () => {
    const index = unique('typed')
    await es(ctx.esUrl, 'PUT', `/${index}`, { mappings: { properties: { price: { type: 'keyword' } } } })
    const sync = new MongoElasticSync({
      name: unique('typed'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${unique('typed')}.c`, index, mappings: { properties: { price: { type: 'double' } } } }],
    })
    await assert.rejects(sync.start(), (e) => e.code === 'ERR_CONFIG' && e.message.includes(`"${index}" maps "price" as keyword, not double`))
  })

  test('writes name the ingest pipeline of their collection', async (t) => {
    const db = ctx.mongo.db(unique('pipe'))
    await db.collection('c').insertOne({ _id: 1 })
    const { events } = await started(t, { name: unique('pipe'), collections: [{ namespace: `${db.databaseName}.c`, index: unique('pipe'), pipeline: 'enrich-v1' }] })
    // The local server has no ingest pipelines: that it refuses this one by name proves it was sent.
    const dead = events.find((e) => e.type === 'deadLetter')
    assert.ok(dead, 'the write was refused by the server')
    assert.match(dead.reason, /enrich-v1/)
  })

  test('gzip compression and every kind of credentials reach the server; secrets stay out of events', async (t) => {
    const db = ctx.mongo.db(unique('auth'))
    await db.collection('c').insertMany([{ _id: 1 }, { _id: 2 }])
    const cases = [
      { elasticsearch: { node: proxy.url.replace('http://', 'http://alice:s3cret-url@') }, header: `Basic ${Buffer.from('alice:s3cret-url').toString('base64')}`, secret: 's3cret-url' },
      { elasticsearch: { node: proxy.url, username: 'bob', password: 's3cret-pw' }, header: `Basic ${Buffer.from('bob:s3cret-pw').toString('base64')}`, secret: 's3cret-pw' },
      { elasticsearch: { node: proxy.url, apiKey: 'a2V5LXNlY3JldA==' }, header: 'ApiKey a2V5LXNlY3JldA==', secret: 'a2V5LXNlY3JldA==' },
      { elasticsearch: { node: proxy.url, bearerToken: 'tok-s3cret', compression: true }, header: 'Bearer tok-s3cret', secret: 'tok-s3cret', gzip: true },
    ]
    for (const c of cases) {
      proxy.seen.length = 0
      const index = unique('auth')
      const { sync, events } = await started(t, { name: unique('auth'), elasticsearch: c.elasticsearch, collections: [{ namespace: `${db.databaseName}.c`, index }] })
      await waitForMirror(ctx, db.collection('c'), index)
      assert.ok(proxy.seen.length > 0 && proxy.seen.every((r) => r.headers.authorization === c.header), `${c.header}: ${JSON.stringify(proxy.seen.map((r) => r.headers.authorization))}`)
      const bulk = proxy.seen.filter((r) => r.url.startsWith('/_bulk'))
      assert.ok(bulk.length > 0)
      assert.ok(bulk.every((r) => (r.headers['content-encoding'] === 'gzip') === Boolean(c.gzip)), 'gzip only when asked for')
      await sync.stop()
      assert.ok(!JSON.stringify(events).includes(c.secret), 'no secret in any event')
    }
  })

  test('refused credentials fail start() with ERR_ES_UNREACHABLE and no secret in the message', async () => {
    proxy.set({ kind: 'status', status: 401 })
    try {
      const sync = new MongoElasticSync({
        name: unique('denied'),
        mongo: { uri: ctx.mongoUrl },
        elasticsearch: { node: proxy.url, username: 'eve', password: 'wrong-pw' },
        collections: [`${unique('denied')}.c`],
      })
      await assert.rejects(sync.start(), (e) => e.code === 'ERR_ES_UNREACHABLE' && /authentication refused/.test(e.message) && !e.message.includes('wrong-pw'))
    } finally {
      proxy.set({ kind: 'pass' })
    }
  })
})
