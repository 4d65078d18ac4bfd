// The NATS JetStream output: every change exactly once (Nats-Msg-Id dedupe) also after a SIGKILL
// and a replay; a record over the server's max_payload is dead-lettered. Needs the NATS server
// with JetStream at NATS_URL (default nats://127.0.0.1:4222).
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { serversFor, unique, waitFor, withTimeout, startStreaming, diffDocs, describeDiff } = require('./helpers.js')
const {
  collectionWith,
  parseRecord,
  changeKey,
  brief,
  replay,
  watchChanges,
  makeDoc,
  startWriter,
  runSync,
  waitForChildState,
  natsJetStream,
  readStream,
  streamMessages,
  NATS_URL,
} = require('./outputs-helpers.js')

describe('nats output', () => {
  const ctx = serversFor('outputs-nats')

  test('nats: JetStream holds every change exactly once, also after a SIGKILL and restart', async (t) => {
    const nats = await natsJetStream()
    const u = unique('nats')
    const stream = `MES_TEST_${u.toUpperCase()}`
    const prefix = `test_${u}`
    t.after(async () => {
      await nats.jsm.streams.delete(stream).catch(() => {})
      await nats.nc.close()
    })
    const N = 100
    const { db, coll, namespace, index } = await collectionWith(ctx, 'nats', Array.from({ length: N }, (_, i) => makeDoc(i)))
    const options = {
      name: unique('nats'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'nats', url: NATS_URL, subject: `${prefix}.{db}.{coll}.{index}`, stream }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 25, flushIntervalMs: 100 },
    }
    const changes = await watchChanges(t, coll)

    /** The stream's messages, checked: subject, Msg-Id header, one JSON record each. */
    const read = async () => {
      const messages = await readStream(nats, stream)
      for (const m of messages) {
        assert.equal(m.subject, `${prefix}.${db.databaseName}.items.${index}`)
        assert.ok(m.msgId, `message ${m.seq} has a Nats-Msg-Id header`)
        m.record = parseRecord(m.text)
      }
      return messages
    }

    const first = runSync(t, options)
    await waitForChildState(first, 'streaming')
    await coll.bulkWrite([
      ...Array.from({ length: 20 }, (_, i) => ({ insertOne: { document: makeDoc(1000 + i) } })),
      ...Array.from({ length: 10 }, (_, i) => ({ updateOne: { filter: { _id: i }, update: { $set: { s: 'updated' } } } })),
      { replaceOne: { filter: { _id: 10 }, replacement: { s: 'replaced' } } },
      ...Array.from({ length: 5 }, (_, i) => ({ deleteOne: { filter: { _id: 90 + i } } })),
    ])
    await waitFor('the copy and the changes in the stream', async () => changes.length === 36 && (await streamMessages(nats, stream)) >= N + 36)
    let messages = await read()
    assert.equal(messages.length, N + 36, 'exactly the copy and the changes')
    const copies = messages.slice(0, N).map((m) => m.record)
    assert.ok(copies.every((r) => r.operation === 'copy' && r.action === 'index' && r.namespace === namespace && r.index === index))
    assert.deepEqual(copies.map((r) => r.id).sort(), Array.from({ length: N }, (_, i) => String(i)).sort())
    assert.deepEqual(
      messages.slice(N).map((m) => brief(m.record)),
      changes,
      'the changes, in change order',
    )
    assert.equal(messages.find((m) => m.record.operation === 'replace').record.document.s, 'replaced')
    assert.equal(messages.find((m) => m.record.operation === 'delete').record.document, null)

    // The position saved after round 1 (at once, as the stream went idle).
    const checkpoints = ctx.mongo.db('mongo_elastic_sync').collection('checkpoints')
    const checkpointId = `${options.name}:${namespace}`
    const afterRound1 = await waitFor('the checkpoint after round 1', async () => (await checkpoints.findOne({ _id: checkpointId }))?.resumeToken)

    // Crash right after a batch was acknowledged, under a write load; then restart.
    const ids = Array.from({ length: N }, (_, i) => i)
    const writer = startWriter(coll, { seed: 4222, updatable: ids.filter((i) => i % 3 !== 0 && i < 90), deletable: ids.filter((i) => i % 3 === 0 && i < 90), nextId: 10000 })
    t.after(() => writer.stop())
    const before = await streamMessages(nats, stream)
    let last = before
    await waitFor(
      'a batch acknowledged under load',
      async () => {
        const now = await streamMessages(nats, stream)
        const grew = now > last && now >= before + 40
        last = now
        return grew
      },
      60000,
      10,
    )
    first.child.kill('SIGKILL')
    await first.exited
    const atKill = await streamMessages(nats, stream)
    // While changes flow, the position is saved at most once a second, so a crash usually
    // replays a little. To make the replay certain, the saved position goes back to where it was
    // before the load, as if the crash had come before any later save: the restarted sync
    // publishes everything since round 1 again, and JetStream must drop it all as duplicates.
    await checkpoints.updateOne({ _id: checkpointId }, { $set: { resumeToken: afterRound1 } })

    const second = runSync(t, options)
    await waitForChildState(second, 'streaming')
    await waitFor('changes through the restarted sync', async () => (await streamMessages(nats, stream)) >= atKill + 40, 60000)
    const ops = await writer.stop()
    await waitFor('the test change stream to see every change', () => changes.length === 36 + ops)
    await waitFor('every change in the stream', async () => {
      const keys = new Set((await readStream(nats, stream)).map((m) => changeKey(parseRecord(m.text))))
      return changes.every((c) => keys.has(changeKey(c)))
    })
    // Let the restarted sync finish what it read, so that a late duplicate would show.
    second.child.kill('SIGTERM')
    const [code] = await withTimeout(second.exited, 30000, 'the restarted sync did not stop on SIGTERM')
    assert.equal(code, 0)

    messages = await read()
    const count = new Map()
    for (const m of messages) count.set(changeKey(m.record), (count.get(changeKey(m.record)) || 0) + 1)
    const duplicates = [...count].filter(([, n]) => n > 1).map(([key]) => key)
    assert.deepEqual(duplicates, [], 'no change twice in the stream (Nats-Msg-Id dedupe)')
    const keys = new Set(count.keys())
    assert.deepEqual(changes.filter((c) => !keys.has(changeKey(c))), [], 'no change missing')
    assert.equal(messages.length, N + changes.length, 'nothing but the copy and the changes')
    assert.equal(new Set(messages.map((m) => m.msgId)).size, messages.length, 'distinct Nats-Msg-Ids')
    const diff = await diffDocs(coll, replay(messages.map((m) => m.record), index))
    assert.ok(diff.same, describeDiff(diff))
    const sent = second.events.filter((e) => e.type === 'batch' && e.phase === 'stream').reduce((n, e) => n + e.indexed + e.deleted, 0)
    const dropped = sent - (messages.length - atKill)
    t.diagnostic(`${changes.length} changes; the restarted sync sent ${sent} records for ${messages.length - atKill} new messages: ${dropped} dropped as duplicates by JetStream`)
    assert.ok(dropped >= atKill - before, `the restarted sync published the ${atKill - before} messages since round 1 again (sent ${sent})`)
  })

  test('nats: a record over the server\'s max_payload is dead-lettered (not retried forever), the rest goes on', async (t) => {
    const nats = await natsJetStream()
    const u = unique('natsbig')
    const stream = `MES_TEST_${u.toUpperCase()}`
    t.after(async () => {
      await nats.jsm.streams.delete(stream).catch(() => {})
      await nats.nc.close()
    })
    const maxPayload = nats.nc.info.max_payload
    const { coll, namespace, index } = await collectionWith(ctx, 'natsbig', [makeDoc(0), { _id: 'big', blob: 'x'.repeat(maxPayload) }, makeDoc(1)])
    const dlq = `${index}-dlq`
    const { events } = await startStreaming(t, {
      name: unique('natsbig'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'nats', url: NATS_URL, subject: `test_${u}.{db}.{coll}`, stream }],
      collections: [{ namespace, index }],
      deadLetterIndex: dlq,
      batch: { flushIntervalMs: 100 },
    })
    // Streamed: the big document again (with its full document), then a small insert.
    await coll.updateOne({ _id: 'big' }, { $set: { n: 1 } })
    await coll.insertOne(makeDoc(2))
    // A batch's dead letters are recorded after its writes: wait for both.
    const records = await waitFor('the insert after the big update, and two dead letters', async () => {
      const r = (await readStream(nats, stream)).map((m) => parseRecord(m.text))
      const lettered = r.filter((x) => x.operation === 'deadLetter').length >= 2 && events.filter((e) => e.type === 'deadLetter').length >= 2
      return r.some((x) => x.operation === 'insert' && x.id === '2') && lettered && r
    })
    assert.deepEqual(records.filter((r) => r.index === index).map((r) => `${r.operation} ${r.id}`), ['copy 0', 'copy 1', 'insert 2'])
    const dead = events.filter((e) => e.type === 'deadLetter')
    assert.deepEqual(dead.map((e) => e.id), ['big', 'big'], 'the copy and the update of the big document')
    for (const e of dead) assert.match(e.reason, new RegExp(`nats .*over the server's max_payload of ${maxPayload}`))
    // Its dead-letter records went to the same output, without the document it could not carry.
    const letters = records.filter((r) => r.operation === 'deadLetter')
    assert.equal(letters.length, 2)
    for (const l of letters) {
      assert.equal(l.index, dlq)
      assert.equal(l.document.id, 'big')
      assert.equal(l.document.document, null)
    }
    assert.ok(!events.some((e) => e.type === 'retry'), 'nothing was retried')
  })
})
