// stop() and start() at random moments of every phase: during start(), the copy and the stream
// (under writes), during index preparation while Elasticsearch answers 503, and during a resync.
// Neither ever hangs, and the last sync started ends with the index equal to the collection.
// Seeded: STOP_START_SEED replays a run (the seed is in every test's name).
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { rng, serversFor, unique, waitFor, waitForMirror, withTimeout, nextEvent } = require('./helpers.js')
const { startFaultProxy } = require('./fault-proxy.js')

const SEED = Number(process.env.STOP_START_SEED || Date.now() % 1e9)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const HANG_MS = 90000

/**
 * One sync's life: start(), then, once `until(events)` holds (or at once), a random wait of up
 * to `maxWaitMs`, then stop(). Both must settle; start() may only fail because the stop cut it
 * short. Returns the events.
 */
async function cycle(options, random, { until = () => true, maxWaitMs = 500, label }) {
  const sync = new MongoElasticSync(options)
  const events = []
  sync.onEvent((e) => events.push(e))
  const started = sync.start().then(
    () => null,
    (e) => e,
  )
  await waitFor(`${label}: the moment to stop`, () => until(events) || events.some((e) => e.type === 'state' && e.state === 'failed'), HANG_MS, 5)
  await sleep(Math.floor(random() * maxWaitMs))
  await withTimeout(sync.stop(), HANG_MS, `${label}: stop() hung`)
  const error = await withTimeout(started, HANG_MS, `${label}: start() hung`)
  if (error) assert.equal(error.code, 'ERR_STATE', `${label}: start() failed only because stop() cut it short: ${error.code} ${error.message}`)
  const failed = events.find((e) => e.type === 'state' && e.state === 'failed')
  assert.ok(!failed, `${label}: the sync did not fail: ${JSON.stringify(failed)}`)
  assert.equal(sync.stats().state, 'stopped', label)
  return events
}

/** A last sync, left to catch up: the index (or alias) `index` must equal the collection. */
async function finalCheck(t, options, ctx, coll, index) {
  const sync = new MongoElasticSync(options)
  t.after(() => sync.stop().catch(() => {}))
  const streaming = nextEvent(sync, (e) => e.type === 'state' && e.state === 'streaming', 180000)
  await sync.start()
  await streaming
  const diff = await waitForMirror(ctx, coll, index, (d) => d, 180000)
  assert.equal(diff.count, await coll.countDocuments())
  await withTimeout(sync.stop(), HANG_MS, 'the last stop() hung')
  assert.equal(sync.stats().deadLetters, 0)
}

/** Bulk changes every 100 ms until stopped. */
function startWriter(coll, random, first) {
  let running = true
  let nextId = first
  const done = (async () => {
    while (running) {
      const ops = []
      for (let k = 0; k < 8; k++) {
        const id = Math.floor(random() * nextId)
        const r = random()
        if (r < 0.6) ops.push({ updateOne: { filter: { _id: id }, update: { $inc: { v: 1 } } } })
        else if (r < 0.75) ops.push({ deleteOne: { filter: { _id: id } } })
        else ops.push({ insertOne: { document: { _id: nextId++, v: 0 } } })
      }
      await coll.bulkWrite(ops, { ordered: false })
      await sleep(100)
    }
  })()
  return async () => {
    running = false
    await done
  }
}

describe('stop and start at any moment', () => {
  const ctx = serversFor('stopstart')

  async function fixture(label, docs) {
    const db = ctx.mongo.db(unique(label))
    const coll = db.collection('c')
    await coll.insertMany(Array.from({ length: docs }, (_, i) => ({ _id: i, v: 0, s: `doc ${i}` })))
    const index = unique(label)
    const options = {
      name: unique(label),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index }],
      batch: { maxDocs: 100, flushIntervalMs: 100 },
      copyRangeMinDocs: 500,
      retry: { initialDelayMs: 50, maxDelayMs: 500 },
    }
    return { db, coll, index, options }
  }

  test(`during start(), the copy and the stream, under writes (seed ${SEED})`, { timeout: 600000 }, async (t) => {
    const random = rng(SEED)
    const { db, coll, index, options } = await fixture('ss_phases', 2000)
    t.after(() => db.dropDatabase().catch(() => {}))
    const stopWriter = startWriter(coll, rng(SEED + 1), 2000)
    t.after(stopWriter)
    const copyBatches = (events) => events.filter((e) => e.type === 'batch' && e.phase === 'copy').length
    const streaming = (events) => events.some((e) => e.type === 'state' && e.state === 'streaming')
    const moments = [
      { label: 'during start()', until: () => true, maxWaitMs: 400 },
      // A copy resumed by an earlier cycle may end before its next batches: then the stream is the moment.
      { label: 'during the copy', until: (events) => copyBatches(events) >= 1 || streaming(events), maxWaitMs: 800 },
      { label: 'during start()', until: () => true, maxWaitMs: 100 },
      { label: 'during the copy', until: (events) => copyBatches(events) >= 2 || streaming(events), maxWaitMs: 300 },
      { label: 'during the stream', until: streaming, maxWaitMs: 1500 },
      { label: 'during start()', until: () => true, maxWaitMs: 1000 },
      { label: 'during the stream', until: streaming, maxWaitMs: 300 },
    ]
    for (const [i, moment] of moments.entries()) await cycle(options, random, { ...moment, label: `cycle ${i + 1}, ${moment.label}` })
    await stopWriter()
    await finalCheck(t, options, ctx, coll, index)
  })

  test(`during index preparation while Elasticsearch answers 503 (seed ${SEED})`, { timeout: 600000 }, async (t) => {
    const random = rng(SEED + 2)
    const proxy = await startFaultProxy(ctx.esUrl)
    t.after(() => proxy.close())
    const { db, coll, index, options } = await fixture('ss_prepare', 300)
    t.after(() => db.dropDatabase().catch(() => {}))
    const viaProxy = { ...options, elasticsearch: { node: proxy.url } }
    for (let i = 0; i < 3; i++) {
      // Reachable at start(), but every request about the index answered 503: its preparation
      // (and, once it exists, the copy's writes) retries until stopped.
      proxy.set({ kind: 'status', status: 503, only: new RegExp(`^/${index}`) })
      const injectedBefore = proxy.counts.injected
      const events = await cycle(viaProxy, random, { label: `cycle ${i + 1}, preparing under 503`, until: () => proxy.counts.injected > injectedBefore, maxWaitMs: 1500 })
      assert.ok(events.some((e) => e.type === 'retry'), `cycle ${i + 1}: the 503s were retried`)
      assert.ok(!events.some((e) => e.type === 'batch'), 'nothing was written while every request failed')
    }
    proxy.set({ kind: 'pass' })
    await finalCheck(t, viaProxy, ctx, coll, index)
  })

  test(`during a resync (seed ${SEED})`, { timeout: 600000 }, async (t) => {
    const random = rng(SEED + 3)
    const { db, coll, index, options } = await fixture('ss_resync', 1500)
    t.after(() => db.dropDatabase().catch(() => {}))
    const resync = { ...options, onHistoryLost: 'resync' }
    // Synced once, then its saved position made invalid: the next start re-copies into <index>-1.
    await cycle(options, random, { label: 'first sync', until: (events) => events.some((e) => e.type === 'state' && e.state === 'streaming'), maxWaitMs: 0 })
    const checkpoints = ctx.mongo.db('mongo_elastic_sync').collection('checkpoints')
    const { modifiedCount } = await checkpoints.updateOne({ _id: `${options.name}:${db.databaseName}.c` }, { $set: { resumeToken: { _data: '00' } } })
    assert.equal(modifiedCount, 1, 'the checkpoint was found')
    await coll.insertMany(Array.from({ length: 50 }, (_, i) => ({ _id: 10000 + i, v: 1 })))
    let resyncs = 0
    for (let i = 0; i < 3; i++) {
      const events = await cycle(resync, random, {
        label: `cycle ${i + 1}, during the re-copy`,
        until: (evs) => evs.filter((e) => e.type === 'batch' && e.phase === 'copy').length >= 1 + Math.floor(random() * 3) || evs.some((e) => e.type === 'state' && e.state === 'streaming'),
        maxWaitMs: 400,
      })
      if (events.some((e) => e.type === 'warning' && /copying again/.test(e.message))) resyncs++
    }
    assert.ok(resyncs >= 1, 'the lost history started a re-copy')
    await finalCheck(t, resync, ctx, coll, index)
  })
})
