// The TCP output (Logstash's tcp input with the json_lines codec): a receiver that drops
// connections, goes away, stalls or is gone at stop(); TLS with a CA file and a server name.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { serversFor, unique, waitFor, withTimeout, startStreaming, diffDocs, describeDiff } = require('./helpers.js')
const { sleep, collectionWith, parseRecord, changeKey, replay, watchChanges, makeDoc, startWriter, lineServer } = require('./outputs-helpers.js')

describe('tcp output', () => {
  const ctx = serversFor('outputs-tcp')

  test('tcp: every change reaches a receiver that drops connections and goes away for a while', async (t) => {
    const N = 150
    const { coll, namespace, index } = await collectionWith(ctx, 'tcp', Array.from({ length: N }, (_, i) => makeDoc(i)))
    const server = await lineServer()
    t.after(() => server.close())
    const { sync, events } = await startStreaming(t, {
      name: unique('tcp'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'tcp', host: '127.0.0.1', port: server.port, connectTimeoutMs: 2000 }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 25, flushIntervalMs: 100 },
      retry: { initialDelayMs: 100, maxDelayMs: 1000 },
    })
    const changes = await watchChanges(t, coll)
    const received = () => server.received.map((x) => parseRecord(x.line))
    const streamedKeys = () => new Set(received().filter((r) => r.operation !== 'copy').map(changeKey))

    await waitFor('the copy records', () => new Set(received().filter((r) => r.operation === 'copy').map((r) => r.id)).size === N)
    const ids = Array.from({ length: N }, (_, i) => i)
    const writer = startWriter(coll, { seed: 5045, updatable: ids.filter((i) => i % 3 !== 0), deletable: ids.filter((i) => i % 3 === 0), nextId: 10000 })
    t.after(() => writer.stop())
    await waitFor('streamed changes', () => streamedKeys().size >= 30)

    // 1: the receiver drops the connection in the middle of the stream.
    server.dropConnections()
    await waitFor('a new connection', () => server.connections >= 2)
    const afterDrop = streamedKeys().size
    await waitFor('changes after the reconnection', () => streamedKeys().size >= afterDrop + 30)

    // 2: the receiver is gone (connections refused) for 2 s while changes go on, then back on the same port.
    await server.close()
    const connectionsBefore = server.connections
    const changesBefore = changes.length
    await sleep(2000)
    assert.ok(changes.length > changesBefore, 'changes were made during the outage')
    await server.listen()
    await waitFor('a connection after the outage', () => server.connections > connectionsBefore, 30000)
    const ops = await writer.stop()
    await waitFor('the test change stream to see every change', () => changes.length === ops)

    await waitFor('every change at the receiver', () => {
      const keys = streamedKeys()
      return changes.length > 0 && changes.every((c) => keys.has(changeKey(c)))
    })
    const records = received() // every line that ended with a line break is a JSON record
    const diff = await diffDocs(coll, replay(records, index))
    assert.ok(diff.same, describeDiff(diff))

    // Duplicates are allowed, loss is not, and the first sight of each change is in change order.
    const firstSeen = []
    const seen = new Set()
    for (const r of records) {
      if (r.operation === 'copy') continue
      assert.equal(r.action, r.operation === 'delete' ? 'delete' : 'index')
      const key = changeKey(r)
      if (!seen.has(key)) firstSeen.push(key)
      seen.add(key)
    }
    assert.deepEqual(firstSeen, changes.map(changeKey), 'each change arrives, in change order, and nothing else')
    const streamedCount = records.filter((r) => r.operation !== 'copy').length
    t.diagnostic(
      `${changes.length} changes, ${streamedCount} stream lines (${streamedCount - changes.length} repeated) over ${server.connections} connections; ` +
        `${server.fragments.length} cut lines at connection ends; ${events.filter((e) => e.type === 'retry').length} retry events`,
    )
    assert.ok(server.connections >= 3)
    await sync.stop()
  })

  test('tcp: a change made right after the receiver closed the connection arrives, with nothing after it', async (t) => {
    const { coll, namespace, index } = await collectionWith(ctx, 'tcpquiet', [makeDoc(0)])
    const server = await lineServer()
    t.after(() => server.close())
    const { sync } = await startStreaming(t, {
      name: unique('tcpquiet'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'tcp', host: '127.0.0.1', port: server.port }],
      collections: [{ namespace, index }],
      batch: { flushIntervalMs: 100 },
      retry: { initialDelayMs: 100, maxDelayMs: 1000 },
    })
    const has = (operation, id) => server.received.some((x) => parseRecord(x.line).operation === operation && parseRecord(x.line).id === id)
    await waitFor('the copy record', () => has('copy', '0'))
    await coll.insertOne(makeDoc(1))
    await waitFor('the first change', () => has('insert', '1'))
    // The receiver closes the connection (as Logstash does when it restarts) while the stream is quiet.
    server.dropConnections()
    await waitFor('the connection to be closed', () => server.sockets.size === 0)
    await coll.insertOne(makeDoc(2))
    // Nothing else happens: the change must not wait for a next one to be delivered.
    await waitFor('the change made after the close, at the receiver', () => has('insert', '2'), 20000)
    assert.ok(server.connections >= 2)
    await sync.stop()
  })

  test('tcp: lines the receiver lost just before the sync stops are sent again at stop()', async (t) => {
    const N = 20
    const { namespace, index } = await collectionWith(ctx, 'tcpstop', Array.from({ length: N }, (_, i) => makeDoc(i)))
    const server = await lineServer()
    t.after(() => server.close())
    server.reading = false
    const { sync, events } = await startStreaming(t, {
      name: unique('tcpstop'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'tcp', host: '127.0.0.1', port: server.port, connectTimeoutMs: 2000 }],
      collections: [{ namespace, index }],
      batch: { flushIntervalMs: 100 },
    })
    // The copy was written (streaming begins after its checkpoint) into a connection nobody reads.
    assert.equal(server.received.length, 0)
    server.reading = true
    server.resetConnections()
    await waitFor('the connection to be gone', () => server.sockets.size === 0)
    // No write follows that could notice the loss: only stop() can.
    await sync.stop()
    const copied = new Set(server.received.map((x) => parseRecord(x.line)).filter((r) => r.operation === 'copy').map((r) => r.id))
    assert.equal(copied.size, N, `copy records at the receiver after stop(): ${copied.size}`)
    assert.equal(server.connections, 2, 'one new connection carried them')
    assert.ok(!events.some((e) => e.type === 'state' && e.state === 'failed'), JSON.stringify(events.filter((e) => e.type === 'state')))
  })

  test('tcp: lines lost with a receiver that is gone at stop() fail the sync with ERR_OUTPUT, not silently', async (t) => {
    const { namespace, index } = await collectionWith(ctx, 'tcpgone', [makeDoc(0), makeDoc(1)])
    const server = await lineServer()
    t.after(() => server.close())
    server.reading = false
    const { sync, events } = await startStreaming(t, {
      name: unique('tcpgone'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'tcp', host: '127.0.0.1', port: server.port, connectTimeoutMs: 1000 }],
      collections: [{ namespace, index }],
      batch: { flushIntervalMs: 100 },
    })
    server.resetConnections()
    await server.close()
    await sync.stop()
    await assert.rejects(sync.wait(), (e) => {
      assert.equal(e.code, 'ERR_OUTPUT', `${e.code}: ${e.message}`)
      assert.match(e.message, /tcp 127\.0\.0\.1:\d+/)
      assert.match(e.message, /could not be sent again/)
      return true
    })
    const failed = events.find((e) => e.type === 'state' && e.state === 'failed')
    assert.equal(failed?.error?.code, 'ERR_OUTPUT')
  })

  test('tcp over TLS: caFile and serverName are used; a wrong CA is refused, rejectUnauthorized: false is not', async (t) => {
    const { makeCerts, startTlsProxy } = require('./tls-fixtures.js')
    const certs = makeCerts()
    t.after(() => certs.cleanup())
    const server = await lineServer()
    t.after(() => server.close())
    const proxy = await startTlsProxy({ target: `127.0.0.1:${server.port}`, certs })
    t.after(() => proxy.close())
    const N = 20
    const { namespace, index } = await collectionWith(ctx, 'tcptls', Array.from({ length: N }, (_, i) => makeDoc(i)))
    /** A one-shot copy to the TLS receiver with these `tls` options. */
    const copyWith = (tls) =>
      new MongoElasticSync({
        name: unique('tcptls'),
        mongo: { uri: ctx.mongoUrl },
        mode: 'copy',
        outputs: [{ type: 'tcp', host: '127.0.0.1', port: proxy.port, tls }],
        collections: [{ namespace, index }],
        retry: { maxAttempts: 2, initialDelayMs: 100, maxDelayMs: 200 },
      })
    const copies = () => server.received.map((x) => parseRecord(x.line)).filter((r) => r.operation === 'copy').length

    const verified = copyWith({ caFile: certs.caFile, serverName: 'localhost' })
    await verified.start()
    await withTimeout(verified.wait(), 60000, 'the copy over TLS did not finish')
    await waitFor('the copy over TLS', () => copies() === N)

    const wrong = copyWith({ caFile: certs.otherCaFile })
    await assert.rejects(
      withTimeout(wrong.start().then(() => wrong.wait()), 60000, 'a wrong CA neither failed nor finished'),
      (e) => {
        assert.match(String(e.code), /^ERR_OUTPUT/, `${e.code}: ${e.message}`)
        assert.match(e.message, /certificate|issuer|tls|handshake/i)
        return true
      },
    )
    assert.equal(copies(), N, 'nothing went through without a verified certificate')

    const insecure = copyWith({ caFile: certs.otherCaFile, rejectUnauthorized: false })
    await insecure.start()
    await withTimeout(insecure.wait(), 60000, 'the unverified copy did not finish')
    await waitFor('the unverified copy', () => copies() === 2 * N)
  })
})
