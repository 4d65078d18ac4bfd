// The JS transform hook: documents changed, dropped (→ deleted from the index) or rejected
// (→ dead letters) by a user function, sync or async, the same in the copy and the stream.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { setup, unique, esDocs, waitFor, nextEvent } = require('./helpers.js')

test('transform hook', async (t) => {
  const ctx = await setup('transform')
  t.after(() => ctx.teardown())

  for (const flavour of ['async', 'sync']) {
    await t.test(`a ${flavour} transform changes, drops and rejects documents in copy and stream`, async () => {
      const db = ctx.mongo.db(unique(`tr_${flavour}`))
      const coll = db.collection('c')
      await coll.insertMany([{ _id: 1, name: 'ann' }, { _id: 2, name: 'bob', skip: true }, { _id: 3, name: 'cid', bad: true }])
      const index = unique(`tr_${flavour}`)
      const sync = new MongoElasticSync({
        name: unique('tr'),
        mongo: { uri: ctx.mongoUrl },
        elasticsearch: { node: ctx.esUrl },
        collections: [{ namespace: `${db.databaseName}.c`, index }],
        batch: { flushIntervalMs: 100 },
      })
      t.after(() => sync.stop().catch(() => {}))
      const seen = []
      const transform = (doc, info) => {
        seen.push(info)
        if (doc.bad) throw new Error(`cannot take ${info.id}`)
        if (doc.skip) return null
        return { ...doc, name: doc.name.toUpperCase(), from: info.namespace }
      }
      sync.setTransform(flavour === 'async' ? async (doc, info) => transform(doc, info) : transform)
      const events = []
      sync.onEvent((e) => events.push(e))
      const streaming = nextEvent(sync, (e) => e.type === 'state' && e.state === 'streaming')
      await sync.start()
      await streaming
      assert.throws(() => sync.setTransform(() => null), (e) => e.code === 'ERR_STATE')

      await coll.insertOne({ _id: 4, name: 'dee' })
      await coll.updateOne({ _id: 1 }, { $set: { skip: true } })
      await coll.insertOne({ _id: 5, name: 'eve', bad: true })
      // The rejected insert may come in a later batch than the others: wait for its dead letter too.
      const docs = await waitFor('the streamed changes', async () => {
        const d = await esDocs(ctx.esUrl, index)
        return d.size === 1 && d.has('4') && events.some((e) => e.type === 'deadLetter' && e.id === '5') && d
      })
      assert.deepEqual(docs.get('4'), { name: 'DEE', from: `${db.databaseName}.c` })
      const dead = events.filter((e) => e.type === 'deadLetter')
      assert.deepEqual(dead.map((e) => e.id).sort(), ['3', '5'])
      assert.match(dead[0].reason, /transform failed: .*cannot take/)
      assert.ok(seen.some((i) => i.phase === 'copy') && seen.some((i) => i.phase === 'stream'))
    })
  }
  await t.test('whatever a transform throws or returns, the document is dead-lettered and the process stays up', async () => {
    // Through the package's entry, as users call it.
    const { MongoElasticSync: Sync } = await import(require('../package.json').name)
    const db = ctx.mongo.db(unique('trbad'))
    await db.collection('c').insertMany([1, 2, 3, 4, 5, 6, 7, 8].map((k) => ({ _id: k, k })))
    const index = unique('trbad')
    const sync = new Sync({
      name: unique('trbad'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index }],
      mode: 'copy',
    })
    t.after(() => sync.stop().catch(() => {}))
    sync.setTransform((doc) => {
      switch (doc.k) {
        case 1:
          throw undefined
        case 2:
          return Promise.reject(null)
        case 3:
          throw 'a string'
        case 4:
          return { f: () => 1 }
        case 5: {
          const cyclic = { a: 1 }
          cyclic.self = cyclic
          return cyclic
        }
        case 6:
          return { s: Symbol('x') }
        case 7:
          return 'not an object'
        default:
          return doc
      }
    })
    const dead = new Map()
    sync.on('deadLetter', (e) => dead.set(e.id, e.reason))
    await sync.start()
    await sync.wait()
    assert.deepEqual([...dead.keys()].sort(), ['1', '2', '3', '4', '5', '6', '7'])
    assert.match(dead.get('1'), /^transform failed: the transform threw undefined$/)
    assert.match(dead.get('2'), /^transform failed: the transform threw null$/)
    assert.match(dead.get('3'), /^transform failed: the transform threw a string$/)
    assert.match(dead.get('4'), /function/i)
    assert.match(dead.get('5'), /nesting/i)
    assert.match(dead.get('6'), /symbol/i)
    assert.match(dead.get('7'), /returned a string/)
    assert.deepEqual([...(await esDocs(ctx.esUrl, index)).keys()], ['8'])
    const stats = sync.stats()
    assert.deepEqual([stats.state, stats.deadLetters, stats.collections[`${db.databaseName}.c`].deadLetters], ['stopped', 7, 7])
  })
  await t.test('numbers keep their type and every digit through a transform', async () => {
    const { Long } = require('mongodb')
    const db = ctx.mongo.db(unique('trnum'))
    await db.collection('c').insertOne({ _id: 1, small: 3, mid: 5000000000, neg: -5000000000, big: Long.fromString('9007199254740993'), f: 1.5 })
    const index = unique('trnum')
    const sync = new MongoElasticSync({
      name: unique('trnum'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index }],
      mode: 'copy',
    })
    t.after(() => sync.stop().catch(() => {}))
    let seen
    sync.setTransform((doc) => {
      seen = doc
      return doc
    })
    await sync.start()
    await sync.wait()
    assert.equal(seen.big, 9007199254740993n, 'an Int64 past 2^53 reaches JS as a BigInt')
    // The stored source, as text: JSON.parse would itself round the big number.
    const raw = await (await fetch(`${ctx.esUrl}/${index}/_doc/1`)).text()
    const source = raw.slice(raw.indexOf('"_source"'))
    for (const field of ['"small":3', '"mid":5000000000,', '"neg":-5000000000,', '"big":9007199254740993', '"f":1.5']) assert.ok(source.includes(field), `${field} in ${source}`)
  })
})
