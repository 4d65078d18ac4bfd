// A sync writing to a file output killed with SIGKILL during the copy and during the stream, under
// a write load, then restarted: no change is missing and no line is torn.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { serversFor, unique, waitFor, withTimeout, diffDocs, describeDiff } = require('./helpers.js')
const {
  collectionWith,
  parseRecord,
  changeKey,
  replay,
  waitForReplay,
  watchChanges,
  makeDoc,
  startWriter,
  tempDir,
  rotatedFiles,
  readOutputFiles,
  readRecordsNow,
  runSync,
  inState,
  batches,
  waitForChildState,
} = require('./outputs-helpers.js')

describe('file output after SIGKILL', () => {
  const ctx = serversFor('outputs-sigkill')

  test('file: SIGKILL during the copy and during the stream under a write load, then restart: nothing missing', async (t) => {
    const N = 1000
    const { coll, namespace, index } = await collectionWith(ctx, 'fkill', Array.from({ length: N }, (_, i) => makeDoc(i, 150)))
    const file = path.join(tempDir(t, 'fkill'), 'changes.ndjson')
    const options = {
      name: unique('fkill'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'file', path: file, rotateBytes: 32 * 1024, keepFiles: 1000 }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 50, flushIntervalMs: 100 },
    }
    const changes = await watchChanges(t, coll)
    const ids = Array.from({ length: N }, (_, i) => i)
    const writer = startWriter(coll, { seed: 20261123, updatable: ids.filter((i) => i % 4 !== 0), deletable: ids.filter((i) => i % 4 === 0).reverse(), nextId: 10000, pad: 150 })
    t.after(() => writer.stop())

    // 1: killed as soon as the first copy batch is written.
    const first = runSync(t, options)
    await waitFor('a copy batch', () => batches(first.events, 'copy') >= 1 || inState(first, 'streaming') || first.events.find((e) => e.type === 'start-failed'), 60000, 5)
    first.child.kill('SIGKILL')
    assert.ok(!first.events.some((e) => e.type === 'start-failed'), JSON.stringify(first.events.find((e) => e.type === 'start-failed')))
    await first.exited
    const firstStates = first.events.filter((e) => e.type === 'state').map((e) => e.state)
    t.diagnostic(`first run killed while ${firstStates.at(-1)} after ${batches(first.events, 'copy')} copy batch(es)`)

    // 2: killed mid-stream, after a few stream batches.
    const second = runSync(t, options)
    await waitForChildState(second, 'streaming')
    await waitFor('stream batches', () => batches(second.events, 'stream') >= 3, 60000, 5)
    second.child.kill('SIGKILL')
    await second.exited
    // A write torn by the crash: the restart must cut it off.
    const TORN = '{"operation":"insert","namespace":"torn by the test'
    fs.appendFileSync(file, TORN)

    // 3: the last run catches up; the load stops meanwhile.
    const third = runSync(t, options)
    await waitForChildState(third, 'streaming')
    await waitFor('stream batches after the restart', () => batches(third.events, 'stream') >= 2, 60000, 20)
    const ops = await writer.stop()
    await waitFor('the test change stream to see every change', () => changes.length === ops)
    const records = await waitForReplay('the files to replay to the collection', () => readRecordsNow(file), coll, index, 90000)
    const t0 = records.find((r) => r.operation === 'copy').version
    const expected = changes.filter((c) => c.version > t0)
    await waitFor('every change after the start point in the files', () => {
      const keys = new Set((readRecordsNow(file) || []).map(changeKey))
      return expected.every((c) => keys.has(changeKey(c)))
    })
    third.child.kill('SIGTERM')
    const [code] = await withTimeout(third.exited, 30000, 'the last run did not stop on SIGTERM')
    assert.equal(code, 0)

    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [], 'only complete lines after a clean stop')
    assert.ok(!all.lines.some((l) => l.includes('torn by the test')), 'the torn line was cut off at restart')
    const final = all.lines.map(parseRecord) // every line is a complete JSON record
    assert.ok(final.filter((r) => r.operation === 'copy').every((r) => r.version === t0), 'the resumed copy keeps its start point')
    const keys = new Set(final.map(changeKey))
    const lost = expected.filter((c) => !keys.has(changeKey(c)))
    assert.deepEqual(lost, [], 'no change is missing')
    const diff = await diffDocs(coll, replay(final, index))
    assert.ok(diff.same, describeDiff(diff))
    t.diagnostic(`${final.length} records for ${N} copied documents and ${expected.length} changes; ${rotatedFiles(file).length} rotated files`)
  })
})
