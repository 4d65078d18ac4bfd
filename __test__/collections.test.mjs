// Collections that come and go under `namespaces` patterns, and databases with many collections.
// The sync runs in its own process (helpers.runChild), so that its connections can be counted
// from /proc (scripts/soak.js's sampleProcess) apart from the test's own client.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { serversFor, unique, waitFor, runChild, waitForMirror, esDocs } = require('./helpers.js')
const { MongoElasticSync } = require('../index.js')
const fs = require('node:fs')
const { sampleProcess, establishedInodes } = require('../scripts/soak.js')

/** Established TCP connections of process `pid` to MongoDB (not those to the search server). */
function mongoConnections(pid, mongoUrl) {
  const inodes = establishedInodes(Number(new URL(mongoUrl.replace(/^mongodb:/, 'http:')).port))
  return fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return inodes.has(/^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1])
    } catch {
      return false
    }
  }).length
}

/** The sync in a child process, stopped (SIGKILL) when the test ends. */
function child(t, options) {
  const run = runChild(options)
  t.after(() => run.child.kill('SIGKILL'))
  return run
}

function streaming(run, after = 0) {
  return waitFor(
    'the sync streaming',
    () => {
      const failed = run.events.find((e) => e.type === 'start-failed' || (e.type === 'state' && e.state === 'failed'))
      if (failed) throw new Error(`the sync failed: ${JSON.stringify(failed)}`)
      return run.events.slice(after).find((e) => e.type === 'state' && e.state === 'streaming')
    },
    90000,
  )
}

/** The URI with idle pooled connections closed after a second, so that counts show what is in use. */
const idleClosing = (url) => `${url}${url.includes('?') ? '&' : '?'}maxIdleTimeMS=1000`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// Pooled connections close once idle: a count is read until it is within `bound` (or
// `timeoutMs` passed) instead of sleeping a fixed time; the caller asserts on the last reading.
async function settledCount(read, bound, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const count = read()
    if (count <= bound || Date.now() > deadline) return count
    await sleep(250)
  }
}

const changeOf = (run, operation, namespace, after = 0) => run.events.slice(after).find((e) => e.type === 'change' && e.operation === operation && e.namespace === namespace)

describe('collections that come and go', () => {
  const ctx = serversFor('collections')

  test('a dropped collection a pattern found is followed no more (its stream and its connection go) and is found again when re-created', { timeout: 240000 }, async (t) => {
    const db = ctx.mongo.db(unique('churn'))
    const prefix = unique('churn')
    await db.collection('base').insertOne({ _id: 1, v: 'base' })
    const run = child(t, {
      name: unique('churn'),
      mongo: { uri: idleClosing(ctx.mongoUrl) },
      elasticsearch: { node: ctx.esUrl },
      namespaces: { include: [`${db.databaseName}\\..*`], discoveryIntervalMs: 200, defaults: { index: `${prefix}-{coll}` } },
      batch: { flushIntervalMs: 50 },
    })
    await streaming(run)
    await waitForMirror(ctx, db.collection('base'), `${prefix}-base`)
    await sleep(3000)
    const baseline = sampleProcess(run.child.pid).connections
    // One collection created, followed, dropped at a time: each one followed for good would
    // keep a change-stream read waiting on a pooled connection of its own.
    const N = 10
    const sampled = []
    for (let i = 0; i < N; i++) {
      const name = `c${i}`
      const coll = db.collection(name)
      await coll.insertMany([{ _id: 1, v: i }, { _id: 2, v: i }])
      await waitFor(`${name} found`, () => changeOf(run, 'discovered', `${db.databaseName}.${name}`), 30000)
      await waitForMirror(ctx, coll, `${prefix}-${name}`)
      await coll.drop()
      await waitFor(`${name}'s drop applied`, () => changeOf(run, 'drop', `${db.databaseName}.${name}`), 30000)
      sampled.push(sampleProcess(run.child.pid).connections)
    }
    // Every drop settles after a quiet second; idle connections close after another.
    const after = await settledCount(() => sampleProcess(run.child.pid).connections, baseline + 2)
    assert.ok(after <= baseline + 2, `connections grew with the dropped collections: ${baseline} at first, ${sampled.join(', ')} after each drop, ${after} at the end`)
    // The same name again: found again, copied into its index (the drop emptied it), followed.
    const back = db.collection('c0')
    const seen = run.events.length
    await back.insertMany([{ _id: 'new', v: 100 }])
    await waitFor('c0 found again', () => changeOf(run, 'discovered', `${db.databaseName}.c0`, seen), 30000)
    await waitForMirror(ctx, back, `${prefix}-c0`).catch((e) => {
      const told = run.events.filter((ev) => !['batch', 'progress', 'log'].includes(ev.type) && (!ev.namespace || ev.namespace.endsWith('.c0')))
      throw new Error(`${e.message}; events: ${JSON.stringify(told).slice(0, 3000)}`)
    })
    await back.updateOne({ _id: 'new' }, { $set: { v: 101 } })
    await back.insertOne({ _id: 'later', v: 1 })
    await waitForMirror(ctx, back, `${prefix}-c0`)
    assert.equal((await esDocs(ctx.esUrl, `${prefix}-c1`)).size, 0, 'the drop emptied the index of c1')
    assert.ok(!run.events.some((e) => e.type === 'state' && e.state === 'failed'))
  })
})

describe('many collections in one database', () => {
  const ctx = serversFor('many-collections')

  test('mongo.databaseStreamThreshold is a whole number from 0 to 10000', () => {
    const options = (threshold) => ({ name: 'n', mongo: { uri: 'mongodb://h/?replicaSet=rs', databaseStreamThreshold: threshold }, elasticsearch: { node: 'http://h:9200' }, collections: ['a.b'] })
    for (const ok of [0, 10, 10000]) assert.doesNotThrow(() => new MongoElasticSync(options(ok)))
    for (const bad of [-1, 2.5, 'ten', 10001]) {
      assert.throws(() => new MongoElasticSync(options(bad)), (e) => e.code === 'ERR_CONFIG' && /mongo\.databaseStreamThreshold/.test(e.message), `threshold ${bad}`)
    }
  })

  test('sixty collections past a threshold of ten share one database stream: ES equals MongoDB, a collection added later is copied then streamed, a restart loses nothing', { timeout: 400000 }, async (t) => {
    const db = ctx.mongo.db(unique('many'))
    const prefix = unique('many')
    const names = Array.from({ length: 60 }, (_, i) => `c${String(i).padStart(2, '0')}`)
    for (const name of names) await db.collection(name).insertMany([{ _id: 1, v: name }, { _id: 2, v: name }])
    const options = {
      name: unique('many'),
      mongo: { uri: idleClosing(ctx.mongoUrl), databaseStreamThreshold: 10 },
      elasticsearch: { node: ctx.esUrl },
      namespaces: { include: [`${db.databaseName}\\..*`], discoveryIntervalMs: 300, defaults: { index: `${prefix}-{coll}` } },
      batch: { flushIntervalMs: 50 },
    }
    const mirrored = async (list) => {
      for (const name of list) await waitForMirror(ctx, db.collection(name), `${prefix}-${name}`, (d) => d, 90000)
    }
    let run = child(t, options)
    await streaming(run)
    await mirrored(names)
    // Changes in several collections, one transaction across two of them.
    await db.collection('c03').updateOne({ _id: 1 }, { $set: { v: 'updated' } })
    await db.collection('c17').deleteOne({ _id: 2 })
    await db.collection('c42').insertOne({ _id: 3, v: 'new' })
    const session = ctx.mongo.startSession()
    await session.withTransaction(async () => {
      await db.collection('c05').insertOne({ _id: 'tx', v: 1 }, { session })
      await db.collection('c50').updateOne({ _id: 1 }, { $set: { v: 'tx' } }, { session })
      await db.collection('c05').updateOne({ _id: 'tx' }, { $set: { v: 2 } }, { session })
    })
    await session.endSession()
    await mirrored(['c03', 'c17', 'c42', 'c05', 'c50'])
    // One stream reads them all: a stream per collection keeps a read waiting on a pooled
    // connection each (60 and more); the copies' connections close once idle.
    const connections = await settledCount(() => mongoConnections(run.child.pid, ctx.mongoUrl), 19)
    assert.ok(connections < 20, `60 followed collections held ${connections} connections to MongoDB`)
    // A collection created while it runs: copied, then followed from the copy's start point
    // (changes made while it was copied included).
    const late = db.collection('late')
    await late.insertMany(Array.from({ length: 50 }, (_, i) => ({ _id: i, v: 0 })))
    await waitFor('late found', () => changeOf(run, 'discovered', `${db.databaseName}.late`), 30000)
    for (let i = 0; i < 50; i += 5) await late.updateOne({ _id: i }, { $set: { v: 1 } })
    await mirrored(['late'])
    await late.updateOne({ _id: 1 }, { $set: { v: 2 } })
    await mirrored(['late'])
    // Stopped; changes meanwhile, and a collection added; started again.
    run.child.kill('SIGTERM')
    await run.exited
    await db.collection('c09').updateOne({ _id: 1 }, { $set: { v: 'while stopped' } })
    await db.collection('c17').insertOne({ _id: 9, v: 'while stopped' })
    await late.deleteOne({ _id: 2 })
    await db.collection('added').insertMany([{ _id: 1, v: 'a' }, { _id: 2, v: 'b' }])
    run = child(t, options)
    await streaming(run)
    await mirrored(['c09', 'c17', 'late', 'added'])
    await db.collection('added').updateOne({ _id: 1 }, { $set: { v: 'streamed' } })
    await db.collection('c33').insertOne({ _id: 4, v: 'after the restart' })
    await mirrored(['added', 'c33'])
    await mirrored(names)
    assert.ok(!run.events.some((e) => e.type === 'state' && e.state === 'failed'), JSON.stringify(run.events.filter((e) => e.type === 'state')))
  })

  test('a start with many collections loads and saves their checkpoints together under the lease term; one held by a later term stops the start', { timeout: 240000 }, async (t) => {
    const db = ctx.mongo.db(unique('manycp'))
    const names = Array.from({ length: 40 }, (_, i) => `c${String(i).padStart(2, '0')}`)
    for (const n of names) await db.collection(n).insertOne({ _id: 1, v: 'before' })
    const name = unique('manycp')
    const options = {
      name,
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      mode: 'stream',
      collections: names.map((n) => ({ namespace: `${db.databaseName}.${n}`, index: `${name}-${n}` })),
      batch: { flushIntervalMs: 50 },
    }
    const checkpoints = ctx.mongo.db('mongo_elastic_sync').collection('checkpoints')
    const saved = async () => new Map((await checkpoints.find({ name, namespace: { $exists: true } }).toArray()).map((d) => [d.namespace, d]))
    const updatesNow = async () => (await ctx.mongo.db('admin').command({ serverStatus: 1 })).opcounters
    const before = await updatesNow()
    let run = child(t, options)
    await streaming(run)
    const during = await updatesNow()
    const term = run.events.find((e) => e.type === 'leadership' && e.change === 'acquired')?.term
    assert.ok(term >= 1, 'the lease acquired')
    // Every collection's checkpoint holds the lease's term and its start point (stream mode).
    const first = await saved()
    assert.deepEqual([...first.keys()].sort(), names.map((n) => `${db.databaseName}.${n}`))
    for (const [ns, d] of first) {
      assert.equal(Number(d.term), term, `${ns}: the lease's term`)
      assert.ok(d.startAt && d.copyDone === true, `${ns}: a start point saved: ${JSON.stringify(d)}`)
    }
    // 40 collections one by one took a fenced read and a start-point save each (80 updates).
    t.diagnostic(`opcounters during the start: ${JSON.stringify(Object.fromEntries(Object.keys(during).map((k) => [k, during[k] - before[k]])))}`)
    assert.ok((during.update ?? 0) - (before.update ?? 0) < 40, `updates during the start: ${during.update - before.update}`)
    await db.collection('c07').updateOne({ _id: 1 }, { $set: { v: 'streamed' } })
    await waitFor('the change indexed', async () => (await esDocs(ctx.esUrl, `${name}-c07`)).get('1')?.v === 'streamed', 30000)
    run.child.kill('SIGTERM')
    await run.exited

    // A later term (another instance took over meanwhile) holds one of them: this instance's
    // start stops there; the checkpoint is not moved back, no other is given a lower term.
    await checkpoints.updateOne({ name, namespace: `${db.databaseName}.c13` }, { $set: { term: term + 100 } })
    run = child(t, options)
    const refused = await waitFor('the start refused', () => run.events.find((e) => e.type === 'start-failed'), 60000)
    assert.equal(refused.code, 'ERR_LEASE_LOST')
    assert.match(refused.message, new RegExp(`${db.databaseName}\\.c13 is held by a later lease term`))
    const second = await saved()
    assert.equal(Number(second.get(`${db.databaseName}.c13`).term), term + 100)
    for (const [ns, d] of second) assert.ok(Number(d.term) >= Number(first.get(ns).term), `${ns}: its term went back`)
  })
})
