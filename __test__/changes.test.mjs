// Ordering and every change type: transactions, replays (stale writes), drop, dropDatabase,
// rename, invalidate, and lost history.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { BSON } = require('mongodb')
const { setup, unique, es, esDocs, waitFor, startStreaming, waitForMirror } = require('./helpers.js')

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

test('change types and ordering', async (t) => {
  const ctx = await setup('changes')
  t.after(() => ctx.teardown())
  const checkpoints = ctx.mongo.db('mongo_elastic_sync').collection('checkpoints')

  /** A running sync of one fresh collection holding `docs` documents. */
  async function running(label, { docs = 20, index = unique(label), db = ctx.mongo.db(unique(label)), ...extra } = {}) {
    const coll = db.collection('c')
    if (docs > 0) await coll.insertMany(Array.from({ length: docs }, (_, i) => ({ _id: i, v: 0 })))
    const options = {
      name: unique(label),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index }],
      batch: { flushIntervalMs: 100 },
      ...extra,
    }
    const { sync, events } = await startStreaming(t, options)
    return { db, coll, index, options, sync, events, checkpointId: `${options.name}:${db.databaseName}.c` }
  }

  await t.test('several changes of one document in one transaction end as the last one', async () => {
    const { coll, index } = await running('txn')
    const session = ctx.mongo.startSession()
    await session.withTransaction(async () => {
      await coll.insertOne({ _id: 'tx', v: 1 }, { session })
      await coll.updateOne({ _id: 'tx' }, { $set: { v: 2 } }, { session })
      await coll.updateOne({ _id: 'tx' }, { $set: { v: 3 } }, { session })
      await coll.deleteOne({ _id: 1 }, { session })
      await coll.insertOne({ _id: 1, v: 100 }, { session })
    })
    await session.endSession()
    await waitForMirror(ctx, coll, index)
    const docs = await esDocs(ctx.esUrl, index)
    assert.equal(docs.get('tx').v, 3)
    assert.equal(docs.get('1').v, 100)
  })

  await t.test('a replay from an older position counts stale writes as conflicts and changes nothing', async () => {
    const first = await running('replay', { batch: { maxDocs: 1, flushIntervalMs: 50 } })
    const { coll, index, checkpointId } = first
    await coll.updateOne({ _id: 0 }, { $set: { v: 1 } })
    await waitForMirror(ctx, coll, index)
    // Saved just after the acknowledgement that made the change readable.
    const older = await waitFor('a resume token saved after the acknowledged change', async () => (await checkpoints.findOne({ _id: checkpointId }))?.resumeToken)
    for (let v = 2; v <= 6; v++) await coll.updateOne({ _id: 0 }, { $set: { v } })
    await waitForMirror(ctx, coll, index)
    await first.sync.stop()

    await checkpoints.updateOne({ _id: checkpointId }, { $set: { resumeToken: older } })
    const replay = new MongoElasticSync(first.options)
    await replay.start()
    t.after(() => replay.stop())
    await waitFor('the replayed changes', () => replay.stats().streamed >= 5)
    await waitForMirror(ctx, coll, index)
    const stats = replay.stats()
    assert.ok(stats.conflicts >= 1, `stale writes are refused by version and counted (${JSON.stringify(stats)})`)
    assert.equal(stats.deadLetters, 0)
    assert.equal((await esDocs(ctx.esUrl, index)).get('0').v, 6)
  })

  await t.test('drop deletes the documents and keeps the index; the collection can come back', async () => {
    const { coll, index, events } = await running('drop')
    const dropped = waitFor('drop event', () => events.find((e) => e.type === 'change' && e.operation === 'drop'))
    await coll.drop()
    await dropped
    assert.equal((await es(ctx.esUrl, 'GET', `/${index}/_count`)).body.count, 0)
    await coll.insertMany([{ _id: 'new', v: 1 }])
    await waitForMirror(ctx, coll, index)
    assert.ok(events.some((e) => e.type === 'change' && e.operation === 'invalidate'), 'the invalidated stream was reopened')
  })

  await t.test('a rename into a followed collection (dropTarget) or $out onto it replaces its contents; readers never see it empty', async () => {
    const { db, coll, index } = await running('replaced', { docs: 20 })
    // A reader of the index during both replacements.
    let reading = true
    const counts = []
    const reader = (async () => {
      while (reading) {
        counts.push((await es(ctx.esUrl, 'GET', `/${index}/_count`)).body?.count ?? -1)
        await sleep(5)
      }
    })()
    try {
      const incoming = db.collection('incoming')
      await incoming.insertMany(Array.from({ length: 5 }, (_, i) => ({ _id: `n${i}`, v: i })))
      await incoming.rename('c', { dropTarget: true })
      await waitForMirror(ctx, coll, index)
      const staging = db.collection('staging')
      await staging.insertMany([{ _id: 'o1', v: 'out' }, { _id: 'o2', v: 'out' }])
      await staging.aggregate([{ $out: 'c' }]).toArray()
      await waitForMirror(ctx, coll, index)
    } finally {
      reading = false
      await reader
    }
    assert.ok(counts.length > 5, `the index was read during the replacements (${counts.length} reads)`)
    assert.ok(Math.min(...counts) >= 2, `every read saw a full index (smallest count ${Math.min(...counts)})`)
    await coll.insertOne({ _id: 'after', v: 1 })
    await waitForMirror(ctx, coll, index)
  })

  await t.test("onDrop: 'deleteIndex' deletes the index; dropDatabase is handled too", async () => {
    const { db, index, events } = await running('dropdb', { onDrop: 'deleteIndex' })
    await db.dropDatabase()
    await waitFor('drop event', () => events.find((e) => e.type === 'change' && /^drop/.test(e.operation)))
    await waitFor('index deleted', async () => (await es(ctx.esUrl, 'HEAD', `/${index}`)).status === 404)
  })

  await t.test("onDrop: 'deleteIndex', then the collection comes back: its index is prepared again as at start", async () => {
    const db = ctx.mongo.db(unique('back'))
    const index = unique('back')
    const alias = unique('back-read')
    const { coll, events } = await running('back', {
      db,
      index,
      docs: 3,
      onDrop: 'deleteIndex',
      collections: [{ namespace: `${db.databaseName}.c`, index, alias, settings: { number_of_shards: 1 }, mappings: { properties: { v: { type: 'keyword' } } } }],
    })
    await coll.drop()
    await waitFor('drop event', () => events.find((e) => e.type === 'change' && e.operation === 'drop'))
    await waitFor('index deleted', async () => (await es(ctx.esUrl, 'HEAD', `/${index}`)).status === 404)
    await coll.insertOne({ _id: 'back', v: 7 })
    await waitForMirror(ctx, coll, index, (d) => ({ ...d, v: d.v }))
    const mapping = await es(ctx.esUrl, 'GET', `/${index}/_mapping`)
    assert.equal(mapping.body[index]?.mappings?.properties?.v?.type, 'keyword', `mappings as configured: ${JSON.stringify(mapping.body)}`)
    assert.deepEqual(Object.keys((await es(ctx.esUrl, 'GET', `/_alias/${alias}`)).body), [index], 'the alias is back')
  })

  await t.test("onDrop: 'ignore' leaves the index as it was", async () => {
    const { coll, index, events } = await running('dropignore', { onDrop: 'ignore', docs: 5 })
    await coll.drop()
    await waitFor('drop event', () => events.find((e) => e.type === 'change' && e.operation === 'drop'))
    assert.equal((await esDocs(ctx.esUrl, index)).size, 5)
  })

  for (const onRename of ['move', 'recopy']) {
    await t.test(`rename with onRename: '${onRename}' puts the documents in the new name's index (from indexTemplate)`, async () => {
      const { db, coll, index, events } = await running(`ren_${onRename}`, { onRename, docs: 30, indexTemplate: 'renamed-{coll}' })
      const target = unique(`renamed_${onRename}`)
      const renamed = waitFor('rename event', () => events.find((e) => e.type === 'change' && e.operation === 'rename'))
      await coll.rename(target)
      const event = await renamed
      assert.equal(event.to, `${db.databaseName}.${target}`)
      const moved = await esDocs(ctx.esUrl, `renamed-${target}`)
      assert.equal(moved.size, 30)
      assert.equal((await es(ctx.esUrl, 'GET', `/${index}/_count`)).body.count, 0)
    })
  }

  for (const filtered of [false, true]) {
    await t.test(`updates read after a rename (their documents no longer found) still reach the new name's index${filtered ? ', with a filter' : ''}`, async () => {
      const label = filtered ? 'late_upd_f' : 'late_upd'
      const extra = { docs: 0, indexTemplate: 'renamed-{coll}' }
      const { db, coll, index, options, sync, checkpointId } = await running(label, extra)
      if (filtered) {
        // running() lists the collection without the filter: start it again with it.
        await sync.stop()
      }
      const opts = filtered ? { ...options, collections: [{ namespace: `${db.databaseName}.c`, index, filter: { kind: 'keep' } }] } : options
      const first = filtered ? new MongoElasticSync(opts) : sync
      if (filtered) {
        t.after(() => first.stop().catch(() => {}))
        await first.start()
      }
      await coll.insertMany(Array.from({ length: 10 }, (_, i) => ({ _id: i, kind: 'keep', v: 0 })))
      await waitForMirror(ctx, coll, index)
      await waitFor('a saved position', async () => (await checkpoints.findOne({ _id: checkpointId }))?.resumeToken)
      await first.stop()
      // While the sync is down: updates, then the rename. The restarted stream reads the
      // updates after the rename, when their documents are no longer found under the old name.
      for (let i = 0; i < 5; i++) await coll.updateOne({ _id: i }, { $set: { v: 1 } })
      const target = unique(`${label}_to`)
      await coll.rename(target)
      const again = new MongoElasticSync(opts)
      const events = []
      again.onEvent((e) => events.push(e))
      t.after(() => again.stop().catch(() => {}))
      await again.start()
      await waitFor('rename event', () => events.find((e) => e.type === 'change' && e.operation === 'rename'))
      await waitForMirror(ctx, db.collection(target), `renamed-${target}`)
    })
  }

  await t.test("a rename into a namespaces pattern prepares the target index with namespaces.defaults (mappings), and the found collection syncs on", async () => {
    const db = ctx.mongo.db(unique('ren_pattern'))
    const coll = db.collection('c')
    await coll.insertMany(Array.from({ length: 5 }, (_, i) => ({ _id: i, v: i })))
    const prefix = unique('pat')
    const { sync, events } = await startStreaming(t, {
      name: unique('ren_pattern'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      namespaces: {
        include: [`${db.databaseName}\\..*`],
        discoveryIntervalMs: 200,
        defaults: { index: `${prefix}-{coll}`, mappings: { properties: { v: { type: 'keyword' } } } },
      },
      batch: { flushIntervalMs: 100 },
    })
    await waitForMirror(ctx, coll, `${prefix}-c`, (d) => ({ ...d, v: d.v }))
    await coll.rename('moved')
    const moved = db.collection('moved')
    await waitFor('the rename', () => events.find((e) => e.type === 'change' && e.operation === 'rename'))
    await waitFor('the renamed collection found', () => events.find((e) => e.type === 'change' && e.operation === 'discovered' && e.namespace.endsWith('.moved')))
    await moved.insertOne({ _id: 'later', v: 9 })
    await waitForMirror(ctx, moved, `${prefix}-moved`)
    const mapping = await es(ctx.esUrl, 'GET', `/${prefix}-moved/_mapping`)
    assert.equal(mapping.body[`${prefix}-moved`].mappings.properties.v.type, 'keyword')
    assert.ok(!events.some((e) => e.type === 'state' && e.state === 'failed'), JSON.stringify(events.filter((e) => e.type === 'state')))
    assert.equal(sync.stats().state, 'streaming')
  })

  await t.test("rename with onRename: 'recopy' shapes the documents by the new name's own settings", async () => {
    const label = 'ren_shape'
    const target = unique('shaped')
    const targetIndex = unique('shaped_idx')
    const db = ctx.mongo.db(unique(label))
    // The new name is listed with settings of its own: its index and field rules apply to the re-copy.
    const index = `${unique(label)}_src`
    const { coll, events } = await running(label, {
      onRename: 'recopy',
      docs: 10,
      index,
      collections: [
        { namespace: `${db.databaseName}.c`, index },
        { namespace: `${db.databaseName}.${target}`, index: targetIndex, fields: { exclude: ['v'], add: { from: '$collection' } } },
      ],
      db,
    })
    const renamed = waitFor('rename event', () => events.find((e) => e.type === 'change' && e.operation === 'rename'))
    await coll.rename(target)
    await renamed
    const docs = await esDocs(ctx.esUrl, targetIndex)
    assert.equal(docs.size, 10)
    for (const [id, source] of docs) assert.deepEqual(source, { from: target }, `document ${id}`)
    assert.equal((await es(ctx.esUrl, 'GET', `/${index}/_count`)).body.count, 0)
  })

  await t.test('an invalid saved resume token fails start() with ERR_HISTORY_LOST and writes nothing', async () => {
    const { coll, index, options, sync, checkpointId } = await running('lost', { docs: 3 })
    await sync.stop()
    await checkpoints.updateOne({ _id: checkpointId }, { $set: { resumeToken: { _data: '00' } } })
    await coll.insertOne({ _id: 'after', v: 1 })
    const again = new MongoElasticSync(options)
    const states = []
    again.onEvent((e) => e.type === 'state' && states.push(e))
    await assert.rejects(again.start(), (e) => {
      assert.equal(e.code, 'ERR_HISTORY_LOST')
      assert.match(e.message, /no longer in the change stream history|invalid/)
      return true
    })
    assert.equal(again.stats().state, 'failed')
    assert.ok(!(await esDocs(ctx.esUrl, index)).has('after'), 'nothing is written from "now" instead')
    await waitFor('failed state event', () => states.find((s) => s.state === 'failed' && s.error.code === 'ERR_HISTORY_LOST'))
  })

  await t.test("onHistoryLost: 'resync' copies into <index>-1, then swaps the alias; readers never see a half-filled index", async () => {
    const { coll, index, options, sync, checkpointId } = await running('resync', { docs: 2000, batch: { maxDocs: 100, flushIntervalMs: 100 } })
    await sync.stop()
    await checkpoints.updateOne({ _id: checkpointId }, { $set: { resumeToken: { _data: '00' } } })
    await coll.insertOne({ _id: 'after', v: 1 })
    const again = new MongoElasticSync({ ...options, onHistoryLost: 'resync' })
    const events = []
    again.onEvent((e) => events.push(e))
    // A reader of the configured name during the whole re-copy.
    let reading = true
    const counts = []
    const reader = (async () => {
      while (reading) {
        counts.push((await es(ctx.esUrl, 'GET', `/${index}/_count`)).body?.count ?? -1)
        await sleep(5)
      }
    })()
    await again.start()
    t.after(() => again.stop())
    await waitFor('the alias swap', () => events.find((e) => e.type === 'change' && e.operation === 'resync'))
    reading = false
    await reader
    assert.ok(counts.length > 5, `the index was read during the re-copy (${counts.length} reads)`)
    assert.ok(Math.min(...counts) >= 2000, `every read saw a complete index (smallest count ${Math.min(...counts)})`)
    const aliases = await es(ctx.esUrl, 'GET', `/_alias/${index}`)
    assert.deepEqual(Object.keys(aliases.body), [`${index}-1`], 'the name is now an alias of the new index; the old one is gone')
    assert.ok(events.some((e) => e.type === 'warning' && /copying again/.test(e.message)))
    assert.equal(again.stats().copied, 2001)
    await coll.insertOne({ _id: 'streamed after the swap', v: 2 })
    await waitForMirror(ctx, coll, index)
  })

  await t.test("during a re-copy the collection's alias stays on the complete index; it moves at the swap", async () => {
    const db = ctx.mongo.db(unique('resync_alias'))
    const index = unique('resync_alias')
    const alias = unique('resync-alias-read')
    const { coll, options, sync, checkpointId } = await running('resync_alias', {
      db,
      index,
      docs: 1000,
      batch: { maxDocs: 50, flushIntervalMs: 100 },
      collections: [{ namespace: `${db.databaseName}.c`, index, alias }],
    })
    await sync.stop()
    await checkpoints.updateOne({ _id: checkpointId }, { $set: { resumeToken: { _data: '00' } } })
    const again = new MongoElasticSync({ ...options, onHistoryLost: 'resync' })
    const events = []
    again.onEvent((e) => events.push(e))
    let reading = true
    const counts = []
    const reader = (async () => {
      while (reading) {
        counts.push((await es(ctx.esUrl, 'GET', `/${alias}/_count`)).body?.count ?? -1)
        await sleep(5)
      }
    })()
    t.after(() => again.stop().catch(() => {}))
    await again.start()
    await waitFor('the alias swap', () => events.find((e) => e.type === 'change' && e.operation === 'resync'))
    reading = false
    await reader
    assert.ok(counts.length > 5, `the alias was read during the re-copy (${counts.length} reads)`)
    assert.deepEqual([Math.min(...counts), Math.max(...counts)], [1000, 1000], 'every read through the alias saw the collection once, complete')
    assert.deepEqual(Object.keys((await es(ctx.esUrl, 'GET', `/_alias/${alias}`)).body), [`${index}-1`])
    await waitForMirror(ctx, coll, alias)
  })

  await t.test("mode: 'stream' with onHistoryLost: 'resync' keeps its index and fails with ERR_HISTORY_LOST", async () => {
    // Stream mode copies nothing: a re-copy would swap in an empty index.
    const { coll, index, options, sync, checkpointId } = await running('streamlost', { docs: 0, mode: 'stream' })
    await coll.insertMany([{ _id: 1, v: 1 }, { _id: 2, v: 2 }])
    await waitForMirror(ctx, coll, index)
    await waitFor('a saved position', async () => (await checkpoints.findOne({ _id: checkpointId }))?.resumeToken)
    await sync.stop()
    await checkpoints.updateOne({ _id: checkpointId }, { $set: { resumeToken: { _data: '00' } } })
    const again = new MongoElasticSync({ ...options, onHistoryLost: 'resync' })
    t.after(() => again.stop().catch(() => {}))
    await assert.rejects(again.start(), (e) => {
      assert.equal(e.code, 'ERR_HISTORY_LOST')
      assert.match(e.message, /mode 'stream'/)
      return true
    })
    assert.equal((await esDocs(ctx.esUrl, index)).size, 2, 'the index keeps what it had')
    assert.equal((await es(ctx.esUrl, 'HEAD', `/${index}-1`)).status, 404, 'no empty index is built')
  })

  await t.test("a filter with operations that exclude delete never deletes: a document updated out of the filter stays", async () => {
    const db = ctx.mongo.db(unique('archive'))
    const index = unique('archive')
    const { coll } = await running('archive', {
      docs: 0,
      db,
      index,
      collections: [{ namespace: `${db.databaseName}.c`, index, filter: { kind: 'keep' }, operations: ['insert', 'update', 'replace'] }],
    })
    await coll.insertMany([{ _id: 1, kind: 'keep', v: 1 }, { _id: 2, kind: 'keep', v: 2 }, { _id: 3, kind: 'keep', v: 3 }])
    await waitFor('three documents', async () => (await esDocs(ctx.esUrl, index)).size === 3)
    await coll.updateOne({ _id: 1 }, { $set: { kind: 'gone' } })
    await coll.deleteOne({ _id: 2 })
    await coll.insertOne({ _id: 4, kind: 'keep', v: 4 })
    await waitFor('the marker document', async () => (await esDocs(ctx.esUrl, index)).has('4'))
    const docs = await esDocs(ctx.esUrl, index)
    assert.deepEqual([...docs.keys()].sort(), ['1', '2', '3', '4'], 'nothing was deleted from the archive')
    assert.deepEqual(docs.get('1'), { kind: 'keep', v: 1 }, 'the document as it was while it matched')
  })

  await t.test('oversized and rejected documents become dead letters, also recorded in deadLetterIndex', async () => {
    const dlq = unique('dead-letters')
    const { coll, index, sync, events } = await running('dlq', { deadLetterIndex: dlq, batch: { maxBytes: 4096, flushIntervalMs: 100 } })
    await coll.insertMany([
      { _id: 'huge', v: 1, blob: 'x'.repeat(10000) },
      { _id: 'conflict', v: { not: 'a number' } },
      { _id: 'fine', v: 2 },
      { _id: 'nan', v: 3, bad: NaN },
    ])
    await waitFor('two dead letters', () => events.filter((e) => e.type === 'deadLetter').length >= 2)
    const dead = Object.fromEntries(events.filter((e) => e.type === 'deadLetter').map((e) => [e.id, e.reason]))
    assert.match(dead.huge, /exceeds batch\.maxBytes \(4096\)/)
    assert.match(dead.conflict, /mapper_parsing_exception|illegal_argument/)
    const records = await waitFor('dead-letter records', async () => {
      const docs = await esDocs(ctx.esUrl, dlq)
      return docs.size === 2 && docs
    })
    const conflict = [...records.values()].find((r) => r.id === 'conflict')
    assert.equal(conflict.namespace, `${coll.dbName}.c`)
    assert.equal(conflict.index, index)
    assert.deepEqual(JSON.parse(conflict.document), { v: { not: 'a number' } })
    const docs = await esDocs(ctx.esUrl, index)
    assert.ok(docs.has('fine') && docs.has('nan') && !('bad' in docs.get('nan')))
    const stats = sync.stats()
    assert.equal(stats.deadLetters, 2)
    assert.equal(stats.valuesAltered, 1, 'the dropped NaN is counted')
    // Issue 19: where the time went, per stage, through the real servers.
    const { readAheadWait, convert, bulkRequest, checkpointSave } = stats.stages
    assert.ok(convert.count >= 3 && readAheadWait.count >= 1 && checkpointSave.count >= 1, JSON.stringify(stats.stages))
    assert.ok(bulkRequest.count >= 1 && bulkRequest.totalMs > 0 && bulkRequest.maxMs <= bulkRequest.totalMs, JSON.stringify(bulkRequest))
  })

  await t.test('an idle collection keeps saving fresh resume tokens', async () => {
    const { checkpointId } = await running('idle', { docs: 1 })
    const first = await waitFor('a first token', async () => (await checkpoints.findOne({ _id: checkpointId }))?.resumeToken)
    // Activity elsewhere moves the cluster's history on; this collection stays quiet.
    const elsewhere = ctx.mongo.db(unique('busy')).collection('c')
    const moved = await waitFor(
      'a newer token for the idle collection',
      async () => {
        await elsewhere.insertOne({ at: new Date() })
        const token = (await checkpoints.findOne({ _id: checkpointId })).resumeToken
        return JSON.stringify(token) !== JSON.stringify(first) && token
      },
      20000,
      500,
    )
    assert.ok(tokenOrder(moved) > tokenOrder(first), 'the saved position only moves forward ' + first._data + ' ' + moved._data)
  })

  /** A resume token's place in the history, comparable with `>`: MongoDB's `_data` is KeyString
   *  hex, ordered as a string; SecantusDB's is hex BSON `{ s: sequence, t: Timestamp, … }`,
   *  whose little-endian bytes are not, so its sequence number is compared instead. */
  function tokenOrder(token) {
    const bytes = Buffer.from(token._data, 'hex')
    if (bytes.length >= 5 && bytes.readInt32LE(0) === bytes.length) {
      const { s } = BSON.deserialize(bytes)
      if (Number.isInteger(s)) return s
    }
    return token._data
  }

})
