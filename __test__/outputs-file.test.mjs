// The file output: change records (one JSON object a line) to a file that rotates by size and by
// age, read as a log shipper would (tailing across rotations) and replayed to the collection; the
// records of filters, routing, dead letters, renames and drops.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { serversFor, unique, waitFor, withTimeout, startStreaming, diffDocs, describeDiff, sortKeys } = require('./helpers.js')
const {
  sleep,
  collectionWith,
  parseRecord,
  brief,
  withoutId,
  replay,
  watchChanges,
  makeDoc,
  tempDir,
  rotatedFiles,
  readOutputFiles,
  readRecordsNow,
  Tailer,
} = require('./outputs-helpers.js')

describe('file output', () => {
  const ctx = serversFor('outputs-file')

  test('file: copy and stream, read by a tailing reader across rotations, replay to the collection', async (t) => {
    const N = 200
    const initial = Array.from({ length: N }, (_, i) => makeDoc(i, 60))
    const { coll, namespace, index } = await collectionWith(ctx, 'file', initial)
    const file = path.join(tempDir(t, 'file'), 'changes.ndjson')
    const rotateBytes = 4096
    const maxDocs = 20
    const tailer = new Tailer(file)
    const ticker = setInterval(() => tailer.poll(), 20)
    t.after(() => {
      clearInterval(ticker)
      tailer.close()
    })

    const { sync } = await startStreaming(t, {
      name: unique('file'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'file', path: file, rotateBytes, keepFiles: 1000 }],
      collections: [{ namespace, index }],
      batch: { maxDocs, flushIntervalMs: 100 },
    })
    const changes = await watchChanges(t, coll)
    const tailed = () => tailer.lines.map(parseRecord)

    // Round 1: inserts; updates (one document twice), replaces and deletes of copied documents.
    const inserted = Array.from({ length: 30 }, (_, i) => makeDoc(1000 + i, 60))
    await coll.insertMany(inserted)
    await coll.bulkWrite([
      ...Array.from({ length: 20 }, (_, i) => ({ updateOne: { filter: { _id: i }, update: { $set: { s: `updated ${i}` }, $inc: { n: 1 } } } })),
      { updateOne: { filter: { _id: 0 }, update: { $push: { tags: 'again' } } } },
      ...[20, 21, 22].map((i) => ({ replaceOne: { filter: { _id: i }, replacement: { s: 'replaced', list: [1, 2, 3] } } })),
      ...Array.from({ length: 15 }, (_, i) => ({ deleteOne: { filter: { _id: 100 + i } } })),
    ])
    await waitFor('round 1 in the file', () => changes.length === 69 && tailed().length >= N + 69)
    // Round 2: changes of the documents inserted in round 1.
    await coll.bulkWrite([
      ...Array.from({ length: 10 }, (_, i) => ({ updateOne: { filter: { _id: 1000 + i }, update: { $set: { s: 'updated after insert' } } } })),
      ...Array.from({ length: 5 }, (_, i) => ({ deleteOne: { filter: { _id: 1010 + i } } })),
      ...Array.from({ length: 5 }, (_, i) => ({ insertOne: { document: makeDoc(2000 + i) } })),
    ])
    await waitFor('round 2 in the file', () => changes.length === 89 && tailed().length >= N + 89)
    await sync.stop()
    tailer.poll()

    assert.ifError(tailer.error)
    assert.deepEqual(tailer.torn, [], 'every rotated file ends with a complete line')
    assert.equal(tailer.rest, '', 'the active file ends with a complete line')
    const records = tailed()
    for (const r of records) {
      assert.equal(r.namespace, namespace)
      assert.equal(r.index, index)
      assert.equal(typeof r.id, 'string')
      assert.equal(typeof r.version, 'bigint', `a version: ${JSON.stringify(r, (k, v) => (typeof v === 'bigint' ? String(v) : v))}`)
      assert.ok(!('routing' in r), 'no routing when none is configured')
    }

    // The copy: one record per document, all with the version of the copy's start point, first.
    const copies = records.filter((r) => r.operation === 'copy')
    assert.equal(copies.length, N)
    assert.deepEqual(copies.map((r) => r.id).sort(), initial.map((d) => String(d._id)).sort())
    const byId = new Map(initial.map((d) => [String(d._id), d]))
    for (const r of copies) {
      assert.equal(r.action, 'index')
      assert.deepEqual(sortKeys(r.document), sortKeys(withoutId(byId.get(r.id))))
    }
    const t0 = copies[0].version
    assert.ok(copies.every((r) => r.version === t0), 'every copy record carries the version of the start point')
    assert.ok(records.slice(0, N).every((r) => r.operation === 'copy'), 'the copy records come before the streamed ones')

    // The stream: exactly the changes, in change order, with the documented versions and actions.
    const streamed = records.slice(N)
    assert.deepEqual(streamed.map(brief), changes)
    const insertedById = new Map([...inserted, ...Array.from({ length: 5 }, (_, i) => makeDoc(2000 + i))].map((d) => [String(d._id), d]))
    for (const r of streamed) {
      assert.ok(r.version > t0)
      assert.equal(r.action, r.operation === 'delete' ? 'delete' : 'index', `${r.operation} ${r.id}`)
      if (r.action === 'delete') assert.equal(r.document, null)
      else assert.equal(typeof r.document, 'object')
      if (r.operation === 'insert') assert.deepEqual(sortKeys(r.document), sortKeys(withoutId(insertedById.get(r.id))))
    }

    // For every id the last record is the final state (versions only grow in file order).
    const last = new Map()
    for (const r of records) {
      const prev = last.get(r.id)
      assert.ok(!prev || prev.version <= r.version, `records of ${r.id} in change order`)
      last.set(r.id, r)
    }
    const lastState = new Map([...last].filter(([, r]) => r.action === 'index').map(([id, r]) => [id, r.document]))
    const diff = await diffDocs(coll, lastState)
    assert.ok(diff.same, describeDiff(diff))
    assert.equal(diff.count, N + 30 - 15 - 5 + 5)

    // Rotation: path.1 … path.k, none deleted (keepFiles is large), each bounded by rotateBytes
    // plus one batch; all files in order hold exactly the lines the tailing reader saw.
    const rotated = rotatedFiles(file)
    assert.ok(rotated.length >= 3, `rotated ${rotated.length} times`)
    assert.deepEqual(rotated.map((r) => r.n), rotated.map((_, i) => i + 1))
    const longest = Math.max(...tailer.lines.map((l) => Buffer.byteLength(l) + 1))
    for (const r of rotated) {
      const size = fs.statSync(r.file).size
      assert.ok(size > 0 && size <= rotateBytes + maxDocs * longest, `${path.basename(r.file)}: ${size} bytes`)
    }
    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    assert.deepEqual(all.lines, tailer.lines, 'rotated files by n ascending, then the active file, are the records in order')
    const replayed = await diffDocs(coll, replay(all.lines.map(parseRecord), index))
    assert.ok(replayed.same, describeDiff(replayed))
  })

  test('file: keepFiles keeps only the newest rotated files (a one-shot copy)', async (t) => {
    const N = 150
    const { coll, namespace, index } = await collectionWith(ctx, 'keep', Array.from({ length: N }, (_, i) => makeDoc(i, 100)))
    const file = path.join(tempDir(t, 'keep'), 'copy.ndjson')
    const sync = new MongoElasticSync({
      name: unique('keep'),
      mongo: { uri: ctx.mongoUrl },
      mode: 'copy',
      outputs: [{ type: 'file', path: file, rotateBytes: 4096, keepFiles: 2, fsync: 'never' }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 10 },
    })
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    await withTimeout(sync.wait(), 120000, 'the copy did not finish')

    const rotated = rotatedFiles(file)
    assert.equal(rotated.length, 2, `kept: ${rotated.map((r) => r.n)}`)
    assert.equal(rotated[1].n, rotated[0].n + 1, 'the two newest are kept')
    assert.ok(rotated[0].n >= 2, `older rotated files were deleted (kept ${rotated.map((r) => r.n)})`)
    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    const records = all.lines.map(parseRecord)
    assert.ok(records.length > 0 && records.length < N, `${records.length} of ${N} records kept`)
    const ids = records.map((r) => r.id)
    assert.equal(new Set(ids).size, ids.length, 'no record twice')
    const exists = new Set((await coll.find({}, { projection: { _id: 1 } }).toArray()).map((d) => String(d._id)))
    for (const r of records) {
      assert.equal(r.operation, 'copy')
      assert.equal(r.action, 'index')
      assert.ok(exists.has(r.id), r.id)
    }
  })

  test('file: rotateSeconds rotates a file that is that old at the next batch', async (t) => {
    const { coll, namespace, index } = await collectionWith(ctx, 'age', [makeDoc(0)])
    const file = path.join(tempDir(t, 'age'), 'changes.ndjson')
    await startStreaming(t, {
      name: unique('age'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'file', path: file, rotateSeconds: 1 }],
      collections: [{ namespace, index }],
      batch: { flushIntervalMs: 100 },
    })
    /** Which file (n of path.n, Infinity for the active one) holds the record of `id`. */
    const fileOf = (id) => {
      for (const f of [...rotatedFiles(file), { n: Infinity, file }]) {
        const lines = fs.existsSync(f.file) ? fs.readFileSync(f.file, 'utf8').split('\n').filter(Boolean) : []
        if (lines.some((l) => parseRecord(l).id === id)) return f.n
      }
      return null
    }
    await waitFor('the copy record', () => fileOf('0') !== null)
    await coll.insertOne(makeDoc(1))
    await waitFor('the first change', () => fileOf('1') !== null)
    assert.deepEqual(rotatedFiles(file), [], 'not rotated while younger than rotateSeconds')
    await sleep(1500) // the age that makes the file due for rotation
    // Rotation happens between batches: the next batch is written, then the file is rotated
    // (or the file is rotated, then the batch written to a new one).
    await coll.insertOne(makeDoc(2))
    await waitFor('the second change and a rotation', () => fileOf('2') !== null && rotatedFiles(file).length >= 1)
    assert.ok(Number.isFinite(fileOf('1')), 'the old file was rotated')
    await coll.insertOne(makeDoc(3))
    await waitFor('the third change', () => fileOf('3') !== null)
    assert.ok(fileOf('1') < fileOf('3'), `a change after the rotation is in a newer file (${fileOf('1')} < ${fileOf('3')})`)
    assert.equal(rotatedFiles(file).length, 1, 'a young file is not rotated again')
    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    assert.deepEqual(all.lines.map((l) => parseRecord(l).id), ['0', '1', '2', '3'])
  })

  test('file: records for filters, routing, dead letters, rename and drop', async (t) => {
    const { db, coll, namespace, index } = await collectionWith(ctx, 'fmt', [
      { _id: 1, kind: 'keep', tenant: 't1', v: 1 },
      { _id: 2, kind: 'keep', tenant: 't2', v: 2 },
      { _id: 3, kind: 'other', tenant: 't1', v: 3 },
      { _id: 4, kind: 'keep', tenant: 't2', bad: true },
    ])
    const other = db.collection('r')
    await other.insertMany([{ _id: 'a', v: 1 }, { _id: 'b', v: 2 }])
    const otherIndex = unique('fmt_r')
    const dlq = unique('fmt_dlq')
    const file = path.join(tempDir(t, 'fmt'), 'changes.ndjson')
    const sync = new MongoElasticSync({
      name: unique('fmt'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'file', path: file }],
      collections: [{ namespace, index, filter: { kind: 'keep' }, routing: '_id' }, { namespace: `${db.databaseName}.r`, index: otherIndex }],
      deadLetterIndex: dlq,
      batch: { flushIntervalMs: 100 },
    })
    sync.setTransform((doc) => {
      if (doc.bad) throw new Error('bad document')
      return doc
    })
    const events = []
    sync.onEvent((e) => events.push(e))
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    await waitFor('streaming', () => events.some((e) => e.type === 'state' && e.state === 'streaming'))
    const records = () => readRecordsNow(file) || []

    const copied = await waitFor('the copy records', () => {
      const r = records().filter((x) => x.operation === 'copy')
      return r.length === 4 && r
    })
    const copy = (id) => copied.find((r) => r.namespace === namespace && r.id === id)
    assert.deepEqual(copy('1').document, { kind: 'keep', tenant: 't1', v: 1 })
    assert.equal(copy('1').routing, '1')
    assert.equal(copy('2').routing, '2')
    assert.equal(copy('3'), undefined, 'filtered out of the copy')
    assert.equal(copy('4'), undefined, 'dead-lettered, not copied')
    assert.deepEqual(copied.filter((r) => r.index === otherIndex).map((r) => r.id).sort(), ['a', 'b'])
    assert.ok(copied.filter((r) => r.index === otherIndex).every((r) => !('routing' in r)))

    const dead = await waitFor('the dead letter record', () => records().find((r) => r.operation === 'deadLetter'))
    assert.equal(dead.namespace, namespace)
    assert.equal(dead.index, dlq)
    assert.equal(dead.id, `${namespace}:4`)
    assert.equal(dead.action, 'index')
    assert.equal(typeof dead.version, 'bigint')
    assert.equal(dead.document.namespace, namespace)
    assert.equal(dead.document.index, index)
    assert.equal(dead.document.id, '4')
    assert.match(dead.document.reason, /bad document/)
    assert.match(JSON.stringify(dead.document.document), /bad/)
    assert.ok(!Number.isNaN(Date.parse(dead.document.at)), `at: ${dead.document.at}`)

    // Out of the filter: operation update, action delete; into it: update, index.
    await coll.updateOne({ _id: 1 }, { $set: { kind: 'other' } })
    await coll.updateOne({ _id: 3 }, { $set: { kind: 'keep' } })
    const [out, into] = await waitFor('the filter moves', () => {
      const r = records().filter((x) => x.operation === 'update' && x.namespace === namespace)
      return r.length >= 2 && r
    })
    assert.equal(out.id, '1')
    assert.equal(out.namespace, namespace)
    assert.equal(out.index, index)
    assert.equal(out.action, 'delete', 'updated out of the filter: deleted from the index')
    assert.equal(out.document, null)
    assert.equal(out.routing, '1', 'the delete is routed too')
    assert.equal(into.id, '3')
    assert.equal(into.action, 'index')
    assert.equal(into.routing, '3')
    assert.deepEqual(into.document, { kind: 'keep', tenant: 't1', v: 3 })
    assert.ok(into.version > out.version)

    // Collection-level records: a rename (onRename 'move': the documents move to the new name's
    // index, then the old index is emptied) and a drop (onDrop 'deleteDocuments').
    const target = unique('fmt_moved')
    await other.rename(target)
    const [reindex, emptied] = await waitFor('the rename records', () => {
      const r = records().filter((x) => x.namespace === `${db.databaseName}.r` && x.action === null)
      return r.length >= 2 && r
    })
    assert.equal(reindex.operation, 'reindex')
    assert.equal(reindex.index, otherIndex)
    assert.equal(reindex.to, target)
    assert.ok(!('document' in reindex) || reindex.document == null)
    assert.equal(emptied.operation, 'deleteDocuments')
    assert.equal(emptied.index, otherIndex)

    await coll.drop()
    const dropped = await waitFor('the deleteDocuments record', () => records().find((r) => r.operation === 'deleteDocuments' && r.namespace === namespace))
    assert.equal(dropped.index, index)
    assert.equal(dropped.action, null)
    await waitFor('the drop event', () => events.some((e) => e.type === 'change' && e.operation === 'drop'))
    await sync.stop()
    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    all.lines.forEach(parseRecord)
  })
})
