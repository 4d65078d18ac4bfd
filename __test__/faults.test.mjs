// Faults under a steady write load: Elasticsearch down or overloaded, per-item rejections,
// MongoDB restarted. The sync waits, retries, and catches up with nothing lost.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { setup, unique, waitFor, startStreaming, waitForMirror } = require('./helpers.js')
const { startFaultProxy } = require('./fault-proxy.js')
const { restartMongo } = require('../scripts/local-servers.js')

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Bulk changes every `everyMs` until stopped; write errors (e.g. during a restart) are retried. */
function steadyWriter(coll, everyMs = 100) {
  let running = true
  let nextId = 100000
  let tick = 0
  let failures = 0
  const done = (async () => {
    while (running) {
      tick++
      const ops = [
        { insertOne: { document: { _id: nextId++, v: tick } } },
        { updateOne: { filter: { _id: tick % 300 }, update: { $set: { v: tick } } } },
        { deleteOne: { filter: { _id: 300 + (tick % 200) } } },
      ]
      try {
        await coll.bulkWrite(ops, { ordered: true })
      } catch {
        failures++
      }
      await sleep(everyMs)
    }
  })()
  return {
    stop: async () => {
      running = false
      await done
      return { ticks: tick, failures }
    },
  }
}

test('faults under load', async (t) => {
  const ctx = await setup('faults')
  const proxy = await startFaultProxy(ctx.esUrl)
  t.after(async () => {
    await proxy.close()
    await ctx.teardown()
  })

  async function startSync(coll, index, docs = 500) {
    await coll.insertMany(Array.from({ length: docs }, (_, i) => ({ _id: i, v: 0 })))
    return startStreaming(t, {
      name: unique('faults'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: proxy.url },
      collections: [{ namespace: `${coll.dbName}.${coll.collectionName}`, index }],
      batch: { flushIntervalMs: 100 },
      retry: { initialDelayMs: 100, maxDelayMs: 1000 },
    })
  }

  await t.test('Elasticsearch down, then answering 503, then 429, for a minute while writes continue', async () => {
    const coll = ctx.mongo.db(unique('es_outage')).collection('c')
    const index = unique('outage')
    const { sync, events } = await startSync(coll, index)
    const writer = steadyWriter(coll)
    proxy.set({ kind: 'reset' })
    await sleep(25000)
    proxy.set({ kind: 'status', status: 503 })
    await sleep(20000)
    proxy.set({ kind: 'status', status: 429 })
    await sleep(15000)
    proxy.set({ kind: 'pass' })
    const { ticks } = await writer.stop()
    assert.ok(ticks > 300, `writes continued during the outage (${ticks} bulk writes)`)
    await waitForMirror(ctx, coll, index)
    const retries = events.filter((e) => e.type === 'retry')
    assert.ok(retries.some((e) => /503/.test(e.cause)), 'retried on 503')
    assert.ok(retries.some((e) => /429/.test(e.cause)), 'retried on 429')
    assert.ok(retries.some((e) => !/HTTP/.test(e.cause)), 'retried on connection errors')
    assert.ok(retries.every((e) => e.delayMs <= 1000), 'backoff stays under retry.maxDelayMs')
    assert.equal(sync.stats().state, 'streaming')
    assert.equal(sync.stats().deadLetters, 0)
  })

  await t.test('per-item 429 rejections are retried alone until every document lands', async () => {
    const coll = ctx.mongo.db(unique('items429')).collection('c')
    const index = unique('items429')
    const { sync } = await startSync(coll, index, 10)
    const before = sync.stats().retries
    proxy.set({ kind: 'rejectItems', every: 2 })
    await coll.insertMany(Array.from({ length: 100 }, (_, i) => ({ _id: 1000 + i, v: i })))
    await waitFor('some items to be rejected', () => proxy.counts.rejectedItems > 0)
    await sleep(500)
    proxy.set({ kind: 'pass' })
    await waitForMirror(ctx, coll, index)
    assert.ok(sync.stats().retries > before, 'item retries are counted')
    assert.equal(sync.stats().deadLetters, 0)
  })

  await t.test('MongoDB restarted under a steady write load: the stream resumes from its token', { skip: !ctx.started && 'MONGO_URL points at a server this test cannot restart' }, async () => {
    const coll = ctx.mongo.db(unique('mongo_restart')).collection('c')
    const index = unique('restart')
    const { sync, events } = await startSync(coll, index)
    const writer = steadyWriter(coll)
    await sleep(1500)
    const pidBefore = ctx.servers.pids.mongo
    await restartMongo(ctx.servers)
    assert.notEqual(ctx.servers.pids.mongo, pidBefore, 'MongoDB really restarted')
    await sleep(2000)
    const { ticks, failures } = await writer.stop()
    assert.ok(ticks - failures > 20, 'writes went on after the restart')
    await waitForMirror(ctx, coll, index)
    // The driver may resume the stream by itself, or the engine retries: either way it must not fail.
    assert.ok(!events.some((e) => e.type === 'state' && e.state === 'failed'), JSON.stringify(events.filter((e) => e.type === 'state')))
    assert.equal(sync.stats().state, 'streaming')
  })
})
