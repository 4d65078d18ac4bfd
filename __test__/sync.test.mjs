// End to end through the JS API: copy with every BSON type, then streaming, then stop/start resume.
import { describe, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { serversFor, unique, es, esDocs, waitFor, nextEvent, waitForMirror } = require('./helpers.js')
const { ObjectId, Long, Decimal128, Binary, UUID, Timestamp, BSONRegExp, Code, MinKey, MaxKey, Double, Int32 } = require('mongodb')

const COPY_DOCS = 3000

function plain(i) {
  return { _id: i, name: `item ${i}`, n: i, tags: ['a', `t${i % 7}`], nested: { even: i % 2 === 0, parts: [{ k: i }] } }
}

/** Raw `_source` text of one document, so that big integers are checked digit for digit. */
async function rawSource(esUrl, index, id) {
  const res = await fetch(`${esUrl}/${index}/_doc/${encodeURIComponent(id)}`)
  const text = await res.text()
  assert.equal(res.status, 200, `document ${id} in ${index}: ${text}`)
  return text
}

describe('copy, stream, stop and resume', () => {
  const ctx = serversFor('sync')
  let db, items, typed, index, options, sync, events
  const oid = new ObjectId('65f0c0ffee00000000000001')

  // One sync for every test below: it copies, then streams while the tests make changes.
  before(async () => {
    db = ctx.mongo.db(unique('shop'))
    items = db.collection('items')
    typed = db.collection('typed')
    index = unique('items-idx')
    options = {
      name: unique('sync'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.items`, index }, `${db.databaseName}.typed`],
      batch: { maxDocs: 500, flushIntervalMs: 200 },
    }

    await items.insertMany(Array.from({ length: COPY_DOCS }, (_, i) => plain(i)))
    const uuid = new UUID('0f8fad5b-d9cb-469f-a165-70867728950e')
    await typed.insertMany([
      {
        _id: oid,
        objectId: new ObjectId('65f0c0ffee00000000000002'),
        date: new Date('2024-01-02T03:04:05.678Z'),
        int32: new Int32(-7),
        int64: Long.fromString('1152921504606846977'),
        double: new Double(1.5),
        decimal: Decimal128.fromString('1234567890.123456789'),
        binary: new Binary(Buffer.from('hello')),
        uuid,
        timestamp: new Timestamp({ t: 1700000000, i: 3 }),
        regex: new BSONRegExp('^ab+c', 'i'),
        code: new Code('function () { return 1 }'),
        min: new MinKey(),
        max: new MaxKey(),
        nul: null,
        bool: true,
        nan: NaN,
        nested: { list: [{ deep: [{ deeper: 'x' }, { deeper: 'y' }] }], inf: [1, Infinity] },
      },
      { _id: 'string-id', v: 1 },
      { _id: Long.fromString('1152921504606846977'), v: 2 },
      { _id: { region: 'eu', n: 1 }, v: 3 },
    ])

    sync = new MongoElasticSync(options)
    ctx.beforeTeardown(() => sync.stop())
    events = []
    sync.onEvent((e) => events.push(e))
    const streaming = nextEvent(sync, (e) => e.type === 'state' && e.state === 'streaming', 120000)
    await sync.start()
    assert.ok(['copying', 'streaming'].includes(sync.stats().state), JSON.stringify(events.filter((e) => e.type === 'state')))

    // Changes made while the copy runs are applied too (the stream starts from before the copy).
    await items.updateMany({ n: { $lt: 50 } }, { $set: { name: 'changed during copy' } })
    await items.deleteMany({ n: { $gte: 50, $lt: 60 } })
    await items.insertOne(plain(COPY_DOCS + 1))
    await streaming
  })

  test('the copy indexed every document with the documented BSON → JSON mapping', async () => {
    assert.deepEqual(events.filter((e) => e.type === 'deadLetter'), [])
    const progress = events.filter((e) => e.type === 'progress' && e.done)
    assert.equal(progress.length, 2, 'one final progress event per collection')
    await waitForMirror(ctx, items, index)
    const raw = await rawSource(ctx.esUrl, 'typed', oid.toHexString())
    assert.match(raw, /"int64":1152921504606846977[,}]/, 'Int64 keeps every digit')
    const doc = JSON.parse(raw)._source
    assert.equal(doc._id, undefined, '_id is not copied into _source')
    assert.equal(doc.objectId, '65f0c0ffee00000000000002')
    assert.equal(doc.date, '2024-01-02T03:04:05.678Z')
    assert.equal(doc.int32, -7)
    assert.equal(doc.double, 1.5)
    assert.equal(doc.decimal, '1234567890.123456789')
    assert.equal(doc.binary, Buffer.from('hello').toString('base64'))
    assert.equal(doc.uuid, '0f8fad5b-d9cb-469f-a165-70867728950e')
    assert.deepEqual(doc.timestamp, { t: 1700000000, i: 3 })
    assert.equal(doc.regex, '/^ab+c/i')
    assert.equal(doc.code, 'function () { return 1 }')
    assert.equal(doc.min, 'MinKey')
    assert.equal(doc.max, 'MaxKey')
    assert.equal(doc.nul, null)
    assert.equal(doc.bool, true)
    assert.ok(!('nan' in doc), 'NaN is dropped')
    assert.deepEqual(doc.nested, { list: [{ deep: [{ deeper: 'x' }, { deeper: 'y' }] }], inf: [1, null] })
    assert.ok(events.some((e) => e.type === 'warning' && /NaN|finite|Infinity/i.test(e.message)), 'dropped values are reported')

    assert.match(await rawSource(ctx.esUrl, 'typed', 'string-id'), /"v":1/)
    assert.match(await rawSource(ctx.esUrl, 'typed', '1152921504606846977'), /"v":2/)
    const compound = (await esDocs(ctx.esUrl, 'typed'))
    assert.equal(compound.size, 4)
    assert.ok([...compound.keys()].some((k) => k.includes('"region":"eu"')), 'compound ids use extended JSON')
  })

  test('inserts, updates, replaces and deletes stream into the index', async () => {
    await items.insertMany([plain(5000), plain(5001)])
    await items.updateOne({ _id: 1 }, { $set: { name: 'updated' }, $inc: { n: 1000 } })
    await items.replaceOne({ _id: 2 }, { name: 'replaced', n: 2, tags: [], nested: { even: true, parts: [] } })
    await items.deleteOne({ _id: 3 })
    await items.updateOne({ _id: 5000 }, { $set: { name: 'inserted then updated' } })
    await items.deleteOne({ _id: 5001 })
    const mirror = await waitForMirror(ctx, items, index)
    assert.equal(mirror.count, COPY_DOCS - 10 + 1 + 1 - 1)
    const docs = await esDocs(ctx.esUrl, index)
    assert.equal(docs.get('1').name, 'updated')
    assert.equal(docs.get('2').name, 'replaced')
    assert.ok(!docs.has('3'))
    assert.equal(docs.get('5000').name, 'inserted then updated')
    const stats = sync.stats()
    assert.ok(stats.streamed >= 6, `streamed ${stats.streamed}`)
    assert.equal(stats.deadLetters, 0)
  })

  test('a document Elasticsearch rejects is dead-lettered with its id and reason; the rest go on', async () => {
    const dead = nextEvent(sync, (e) => e.type === 'deadLetter')
    await items.insertMany([{ _id: 7000, name: 'ok before' }, { _id: 7001, name: { not: 'a string' } }, { _id: 7002, name: 'ok after' }])
    const event = await dead
    assert.equal(event.id, '7001')
    assert.equal(event.namespace, `${db.databaseName}.items`)
    assert.equal(event.index, index)
    assert.match(event.reason, /mapper_parsing_exception|object mapping|illegal_argument/)
    await waitFor('neighbours of the rejected document', async () => {
      const docs = await esDocs(ctx.esUrl, index)
      return docs.has('7000') && docs.has('7002')
    })
    assert.equal(sync.stats().deadLetters, 1)
    await items.deleteMany({ _id: { $in: [7000, 7001, 7002] } })
  })

  test('stop() then start() resumes with nothing missed, duplicated or copied again', async (t) => {
    await sync.stop()
    assert.equal(sync.stats().state, 'stopped')
    // Changes while stopped.
    await items.insertOne(plain(6000))
    await items.updateOne({ _id: 10 }, { $set: { name: 'while stopped' } })
    await items.deleteOne({ _id: 11 })
    await typed.updateOne({ _id: 'string-id' }, { $set: { v: 100 } })

    const again = new MongoElasticSync(options)
    await again.start()
    t.after(() => again.stop())
    assert.equal(again.stats().state, 'streaming', 'the copy is not repeated')
    await waitForMirror(ctx, items, index)
    await waitFor('typed update', async () => /"v":100/.test(await rawSource(ctx.esUrl, 'typed', 'string-id')))
    const stats = again.stats()
    assert.equal(stats.copied, 0)
    assert.ok(stats.streamed >= 4 && stats.streamed < 20, `only the new changes are streamed (${stats.streamed})`)
    const count = await es(ctx.esUrl, 'GET', `/${index}/_count`)
    assert.equal(count.body.count, await items.countDocuments())
  })
})
