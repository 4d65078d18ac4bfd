// Several outputs at once (fan-out): Elasticsearch and a file get the same changes.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { serversFor, unique, startStreaming, waitForMirror, esDocs, sortKeys } = require('./helpers.js')
const {
  collectionWith,
  parseRecord,
  brief,
  replay,
  waitForReplay,
  watchChanges,
  makeDoc,
  tempDir,
  readOutputFiles,
  readRecordsNow,
} = require('./outputs-helpers.js')

describe('fan-out to several outputs', () => {
  const ctx = serversFor('outputs-fanout')

  test('fan-out: Elasticsearch and a file get the same changes', async (t) => {
    const N = 100
    const { coll, namespace, index } = await collectionWith(ctx, 'fan', Array.from({ length: N }, (_, i) => makeDoc(i)))
    const file = path.join(tempDir(t, 'fan'), 'changes.ndjson')
    const { sync, events } = await startStreaming(t, {
      name: unique('fan'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      outputs: [{ type: 'elasticsearch' }, { type: 'file', path: file }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 50, flushIntervalMs: 100 },
    })
    assert.ok(events.some((e) => e.type === 'connected'), 'Elasticsearch was reached')
    const changes = await watchChanges(t, coll)
    await coll.insertMany(Array.from({ length: 10 }, (_, i) => makeDoc(1000 + i)))
    await coll.bulkWrite([
      ...Array.from({ length: 10 }, (_, i) => ({ updateOne: { filter: { _id: i }, update: { $set: { s: 'fanned out' } } } })),
      { replaceOne: { filter: { _id: 50 }, replacement: { s: 'replaced' } } },
      ...Array.from({ length: 5 }, (_, i) => ({ deleteOne: { filter: { _id: 60 + i } } })),
    ])
    await waitForMirror(ctx, coll, index)
    await waitForReplay('the file to replay to the collection', () => readRecordsNow(file), coll, index)
    await sync.stop()

    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    const records = all.lines.map(parseRecord)
    assert.equal(records.filter((r) => r.operation === 'copy').length, N)
    assert.deepEqual(records.filter((r) => r.operation !== 'copy').map(brief), changes, 'the file has every change, once, in order')
    const indexed = await esDocs(ctx.esUrl, index)
    const fromFile = replay(records, index)
    assert.equal(indexed.size, N + 10 - 5)
    assert.deepEqual([...fromFile.keys()].sort(), [...indexed.keys()].sort())
    for (const [id, doc] of indexed) assert.deepEqual(sortKeys(fromFile.get(id)), sortKeys(doc), id)
  })
})
