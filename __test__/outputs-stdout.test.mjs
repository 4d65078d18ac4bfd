// The stdout output: a one-shot copy in its own process prints exactly its records on stdout
// (events go to stderr), then the process exits by itself.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'
import { once } from 'node:events'

const require = createRequire(import.meta.url)
const { serversFor, unique, withTimeout, sortKeys } = require('./helpers.js')
const { collectionWith, parseRecord, withoutId, eachLine, RUN_STDOUT } = require('./outputs-helpers.js')
const { ObjectId } = require('mongodb')

describe('stdout output', () => {
  const ctx = serversFor('outputs-stdout')

  test('stdout: a one-shot copy prints exactly the documents as copy records, then the process exits', async (t) => {
    const N = 120
    const docs = Array.from({ length: N }, (_, i) => ({ _id: new ObjectId(), i, s: `doc ${i}`, nested: { list: [i, `${i}`] } }))
    const { namespace, index } = await collectionWith(ctx, 'stdout', docs)
    const options = { name: unique('stdout'), mongo: { uri: ctx.mongoUrl }, mode: 'copy', outputs: [{ type: 'stdout' }], collections: [{ namespace, index }], batch: { maxDocs: 50 } }
    const child = spawn(process.execPath, [RUN_STDOUT, JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'pipe'] })
    t.after(() => child.kill('SIGKILL'))
    let stdout = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (d) => (stdout += d))
    const events = []
    const stderr = []
    eachLine(child.stderr, (line) => {
      stderr.push(line)
      try {
        events.push(JSON.parse(line))
      } catch {
        // engine logs, if MONGO_ELASTIC_SYNC_LOG is set
      }
    })
    const [code] = await withTimeout(once(child, 'exit'), 120000, 'the process did not exit by itself after the copy')
    assert.equal(code, 0, stderr.join('\n'))
    assert.ok(events.some((e) => e.type === 'waited'), 'wait() resolved')
    assert.ok(events.some((e) => e.type === 'state' && e.state === 'stopped'), JSON.stringify(events.filter((e) => e.type === 'state')))

    assert.ok(stdout.endsWith('\n'), 'stdout ends with a complete line')
    const records = stdout.slice(0, -1).split('\n').map(parseRecord)
    assert.equal(records.length, N, 'one record per document, nothing else on stdout')
    const byId = new Map(docs.map((d) => [d._id.toHexString(), d]))
    assert.deepEqual(records.map((r) => r.id).sort(), [...byId.keys()].sort())
    for (const r of records) {
      assert.equal(r.operation, 'copy')
      assert.equal(r.action, 'index')
      assert.equal(r.namespace, namespace)
      assert.equal(r.index, index)
      assert.equal(typeof r.version, 'bigint')
      assert.deepEqual(sortKeys(r.document), sortKeys(withoutId(byId.get(r.id))))
    }
  })
})
