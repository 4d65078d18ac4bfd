// The Node idioms of the package's entry (the layer in lib/, loaded by the package's own name,
// as users import it): typed EventEmitter events, guarded listeners, events(), AbortSignal,
// `await using`, SyncError, per-collection stats and the logger option. The CommonJS twin is
// node-api.test.cjs.
import test from 'node:test'
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { name: PACKAGE } = require('../package.json')
const { MongoElasticSync, SyncError, isSyncError } = await import(PACKAGE)
const { setup, unique, waitFor, withTimeout } = require('./helpers.js')
const HERE = path.dirname(new URL(import.meta.url).pathname)

/** The first `type` event matching `predicate`, through the typed `on`/`off`. */
function nextEvent(sync, type, predicate = () => true, timeoutMs = 60000) {
  let listener
  const found = new Promise((resolve) => {
    listener = (e) => predicate(e) && resolve(e)
    sync.on(type, listener)
  })
  return withTimeout(found, timeoutMs, `timed out waiting for a '${type}' event`).finally(() => sync.off(type, listener))
}

const UNREACHABLE = 'mongodb://127.0.0.1:1/?replicaSet=rs0&serverSelectionTimeoutMS=300'
const offline = (extra = {}) => ({ name: unique('offline'), mongo: { uri: UNREACHABLE }, elasticsearch: { node: 'http://127.0.0.1:1' }, collections: ['a.b'], ...extra })

test('the package entry is the Node layer, the same for import and require', () => {
  const required = require(PACKAGE)
  assert.equal(required.MongoElasticSync, MongoElasticSync)
  assert.equal(required.SyncError, SyncError)
  assert.notEqual(MongoElasticSync, require('../index.js').MongoElasticSync, 'not the generated native class')
  const sync = new MongoElasticSync(offline())
  assert.ok(sync instanceof EventEmitter)
  assert.equal(typeof sync[Symbol.asyncDispose], 'function')
  assert.equal(sync.stats().state, 'idle')
  assert.deepEqual(sync.stats().collections, {})
})

test('bad options and misuse throw SyncErrors with a code', async () => {
  const configError = (fn, pattern) =>
    assert.throws(fn, (e) => e instanceof SyncError && e instanceof Error && isSyncError(e) && e.name === 'SyncError' && e.code === 'ERR_CONFIG' && pattern.test(e.message))
  configError(() => new MongoElasticSync({ name: 'x' }), /mongo/)
  configError(() => new MongoElasticSync(offline({ logger: {} })), /^logger: must be an object with level methods/)
  configError(() => new MongoElasticSync(offline({ logger: 'debug' })), /^logger:/)
  // serde would read an object from an array holding every field in order: refused by name.
  configError(() => new MongoElasticSync(offline({ retry: [3, 100, 1000] })), /^retry: must be an object, not an array/)
  const sync = new MongoElasticSync(offline())
  configError(() => sync.setTransform(42), /must be a function/)
  configError(() => sync.events({ maxEvents: 0 }), /maxEvents must be a positive integer/)
  configError(() => sync.events({ maxBytes: 1.5 }), /maxBytes/)
  await assert.rejects(sync.stop(), (e) => isSyncError(e) && e.code === 'ERR_STATE')
  await assert.rejects(sync.wait(), (e) => isSyncError(e) && e.code === 'ERR_STATE')
  assert.ok(!isSyncError(new Error('plain')) && !isSyncError({ code: 'ERR_STATE' }) && !isSyncError(null))
  const own = new SyncError('why', { code: 'ERR_STATE', namespace: 'a.b', cause: 'c' })
  assert.deepEqual([own.code, own.namespace, own.cause, own.message], ['ERR_STATE', 'a.b', 'c', 'why'])
})

test('events() ends with the sync; a full buffer ends with ERR_EVENTS_OVERFLOW; a failure is an error event', async () => {
  const sync = new MongoElasticSync(offline())
  const all = sync.events()
  const tiny = sync.events({ maxEvents: 1 })
  const aborted = sync.events({ signal: AbortSignal.abort() })
  const errors = []
  sync.on('error', (e) => errors.push(e))
  await assert.rejects(sync.start(), (e) => isSyncError(e) && e.code === 'ERR_MONGO_UNREACHABLE')
  const seen = []
  for await (const event of all) seen.push(`${event.type}:${event.state}`)
  assert.deepEqual(seen, ['state:starting', 'state:failed'], 'it ends after the failed state')
  assert.deepEqual((await tiny.next()).value, { type: 'state', state: 'starting' })
  await assert.rejects(tiny.next(), (e) => isSyncError(e) && e.code === 'ERR_EVENTS_OVERFLOW' && /fell behind by more than 1 events/.test(e.message))
  assert.deepEqual(await tiny.next(), { value: undefined, done: true })
  await assert.rejects(aborted.next(), (e) => e.name === 'AbortError')
  assert.equal(errors.length, 1)
  assert.ok(errors[0] instanceof SyncError && errors[0].code === 'ERR_MONGO_UNREACHABLE')
})

test('a running sync: typed listeners, guarded exceptions, events(), per-collection stats, logger', async (t) => {
  const ctx = await setup('node-api')
  t.after(() => ctx.teardown())
  const db = ctx.mongo.db(unique('napi'))
  const sizes = { a: 30, b: 20, c: 10 }
  for (const [name, n] of Object.entries(sizes)) {
    await db.collection(name).insertMany(Array.from({ length: n }, (_, i) => ({ _id: i, n: i, bad: name === 'c' && i === 3 })))
  }
  const ns = (name) => `${db.databaseName}.${name}`
  const records = []
  const logger = {
    level: 'debug',
    debug: (fields, message) => records.push({ level: 'debug', fields, message }),
    info: (fields, message) => records.push({ level: 'info', fields, message }),
    warn: (fields, message) => records.push({ level: 'warn', fields, message }),
  }
  const name = unique('napi')
  const sync = new MongoElasticSync({
    name,
    mongo: { uri: ctx.mongoUrl },
    elasticsearch: { node: ctx.esUrl },
    collections: ['a', 'b', 'c'].map((c) => ({ namespace: ns(c), index: unique(`napi-${c}`) })),
    batch: { maxDocs: 10, flushIntervalMs: 100 },
    logger,
  })
  t.after(() => sync.stop().catch(() => {}))
  sync.setTransform((doc) => {
    if (doc.bad) throw new Error('bad document')
    return doc
  })
  const errors = []
  const counted = { batch: 0, event: 0, onEvent: 0, removed: 0, connected: 0 }
  sync.on('error', (e) => errors.push(e))
  sync.on('batch', () => {
    throw new Error('listener boom')
  })
  sync.on('batch', () => counted.batch++) // still called after the one that threw
  sync.on('progress', async () => {
    throw new Error('async boom')
  })
  sync.once('connected', () => counted.connected++)
  const removed = () => counted.removed++
  sync.on('deadLetter', removed).off('deadLetter', removed)
  sync.on('event', () => counted.event++)
  sync.onEvent(() => counted.onEvent++)
  const iterated = (async () => {
    const types = []
    for await (const event of sync.events()) types.push(event.type === 'state' ? `state:${event.state}` : event.type)
    return types
  })()
  const streaming = nextEvent(sync, 'state', (e) => e.state === 'streaming')
  await sync.start()
  await streaming

  const changedFrom = Date.now() - 1000 // cluster times have one-second resolution
  await db.collection('a').updateMany({ n: { $lt: 2 } }, { $set: { x: 1 } })
  await db.collection('b').updateMany({ n: { $lt: 3 } }, { $set: { x: 1 } })
  await db.collection('c').insertOne({ _id: 100, n: 100 })
  const stats = await waitFor('every change applied and acknowledged', () => {
    const s = sync.stats()
    const c = s.collections
    const streamed = [c[ns('a')]?.streamed, c[ns('b')]?.streamed, c[ns('c')]?.streamed]
    return streamed.join() === '2,3,1' && Object.values(c).every((x) => x.inFlightBytes === 0) && s
  })
  for (const [name, n] of Object.entries(sizes)) {
    const c = stats.collections[ns(name)]
    assert.equal(c.phase, 'streaming', name)
    assert.equal(c.copied, n, `${name}: every document read by the copy`)
    assert.equal(c.totalEstimate, n, name)
    assert.equal(c.deadLetters, name === 'c' ? 1 : 0, `${name}: the document the transform rejected`)
    assert.equal(c.retries, 0, name)
    assert.ok(c.lastChangeAt instanceof Date && c.lastChangeAt.getTime() >= changedFrom && c.lastChangeAt.getTime() <= Date.now(), `${name}: ${c.lastChangeAt}`)
    assert.ok(c.lagMs >= 0 && c.lagMs <= Date.now() - changedFrom + 1000, `${name}: lag ${c.lagMs}`)
    assert.ok(c.lastCheckpointAt instanceof Date && c.checkpointAgeMs >= 0 && c.checkpointAgeMs < 60000, `${name}: ${c.lastCheckpointAt} ${c.checkpointAgeMs}`)
  }
  assert.equal(Object.keys(stats.collections).length, 3)
  assert.equal(stats.copied, 60)
  assert.equal(stats.deadLetters, 1)

  // Every batch reached the listener after the one that threw, and each throw is an 'error'.
  // (Events reach JS through a queue, so the last ones may arrive after stats() counts them.)
  await waitFor(`all ${stats.batches} batch events at the listener (${counted.batch} so far)`, () => counted.batch === stats.batches, 10000)
  assert.equal(counted.batch, stats.batches)
  assert.equal(counted.connected, 1)
  assert.equal(counted.removed, 0)
  assert.ok(counted.event > 0 && counted.event === counted.onEvent)
  assert.ok(errors.length > 0 && errors.every((e) => isSyncError(e) && e.code === 'ERR_LISTENER'))
  assert.ok(errors.some((e) => e.cause?.message === 'listener boom' && /^a 'batch' listener threw: listener boom$/.test(e.message)))
  assert.ok(errors.some((e) => e.cause?.message === 'async boom'))

  // The engine's records reached the logger, with their fields and this sync's name.
  const connected = records.find((r) => r.message === 'connected to the search server')
  assert.ok(connected, JSON.stringify(records.slice(0, 5)))
  assert.equal(connected.level, 'info')
  assert.equal(connected.fields.target, 'mongo_elastic_sync::sink::elasticsearch::service')
  assert.equal(connected.fields.sync, name)
  assert.ok(records.some((r) => r.level === 'debug' && /Batch/.test(r.fields.event)), 'debug records too, at the logger level')

  // A second sync with its own logger: each gets its own sync's records.
  const otherRecords = []
  const otherName = unique('napi-other')
  const other = new MongoElasticSync({
    name: otherName,
    mongo: { uri: ctx.mongoUrl },
    elasticsearch: { node: ctx.esUrl },
    collections: [{ namespace: ns('b'), index: unique('napi-other') }],
    mode: 'copy',
    logger: {
      level: 'debug',
      debug: (fields, message) => otherRecords.push({ fields, message }),
      info: (fields, message) => {
        otherRecords.push({ fields, message })
        throw new Error('logger boom')
      },
    },
  })
  const warnings = []
  const onWarning = (w) => warnings.push(w)
  process.on('warning', onWarning)
  t.after(() => process.off('warning', onWarning))
  await other.start()
  await other.wait()
  await waitFor('the thrown logger error as a process warning', () => warnings.some((w) => w.code === 'ERR_LISTENER' && w.cause?.message === 'logger boom'))
  const thrownAt = otherRecords.findIndex((r) => r.message === 'connected to the search server')
  assert.ok(thrownAt >= 0 && otherRecords.length > thrownAt + 1, 'records after the one whose logger call threw')
  assert.ok(otherRecords.some((r) => r.fields.sync === otherName))
  assert.ok(otherRecords.every((r) => r.fields.sync === undefined || r.fields.sync === otherName))
  assert.ok(records.every((r) => r.fields.sync === undefined || r.fields.sync === name))
  assert.equal(other.stats().collections[ns('b')].phase, 'done')

  await sync.stop()
  const types = await withTimeout(iterated, 30000, 'events() did not end with the sync')
  assert.equal(types.at(-1), 'state:stopped')
  assert.ok(types.includes('batch') && types.includes('progress') && types.includes('deadLetter'), types.join())
  assert.ok(Object.values(sync.stats().collections).every((c) => c.phase === 'stopped'))
})

test('AbortSignal and `await using` stop a sync', async (t) => {
  const ctx = await setup('node-api-abort')
  t.after(() => ctx.teardown())
  const db = ctx.mongo.db(unique('abort'))
  await db.collection('big').insertMany(Array.from({ length: 600 }, (_, i) => ({ _id: i, text: 'x'.repeat(200) })))
  await db.collection('small').insertOne({ _id: 1 })
  const options = (collection, extra = {}) => ({
    name: unique('abort'),
    mongo: { uri: ctx.mongoUrl },
    elasticsearch: { node: ctx.esUrl },
    collections: [{ namespace: `${db.databaseName}.${collection}`, index: unique(`abort-${collection}`) }],
    batch: { maxDocs: 20, concurrency: 1, flushIntervalMs: 100 },
    ...extra,
  })

  await t.test('an aborted signal during the copy stops it, checkpointed', async () => {
    const sync = new MongoElasticSync(options('big'))
    t.after(() => sync.stop().catch(() => {}))
    const controller = new AbortController()
    sync.once('batch', () => controller.abort())
    const stopped = nextEvent(sync, 'state', (e) => e.state === 'stopped')
    await sync.start({ signal: controller.signal })
    await stopped
    await sync.wait()
    const c = sync.stats().collections[`${db.databaseName}.big`]
    assert.equal(c.phase, 'stopped')
    assert.ok(c.copied > 0 && c.copied < 600, `interrupted copy: ${c.copied} of 600`)
    assert.ok(c.lastCheckpointAt instanceof Date)
  })

  await t.test('an aborted signal during the stream stops it', async () => {
    const sync = new MongoElasticSync(options('small'))
    t.after(() => sync.stop().catch(() => {}))
    const controller = new AbortController()
    const streaming = nextEvent(sync, 'state', (e) => e.state === 'streaming')
    await sync.start({ signal: controller.signal })
    await streaming
    const stopped = nextEvent(sync, 'state', (e) => e.state === 'stopped')
    controller.abort()
    await stopped
    await sync.wait()
    assert.equal(sync.stats().collections[`${db.databaseName}.small`].phase, 'stopped')
  })

  await t.test('a signal aborted before start() resolves: AbortError once stopped; already aborted: not started', async () => {
    // Aborted at once, the stop may reach the engine before the start does (it then finds
    // nothing running): the sync must still end stopped. Repeated, since that order is a race.
    for (let i = 0; i < 15; i++) {
      const sync = new MongoElasticSync(options('small', { mode: 'stream' }))
      const controller = new AbortController()
      const starting = sync.start({ signal: controller.signal })
      controller.abort(new Error('changed my mind'))
      await assert.rejects(starting, (e) => e.name === 'AbortError' && e.cause?.message === 'changed my mind')
      assert.equal(sync.stats().state, 'stopped', `attempt ${i + 1}`)
    }
    const never = new MongoElasticSync(options('small'))
    await assert.rejects(never.start({ signal: AbortSignal.abort() }), (e) => e.name === 'AbortError')
    assert.equal(never.stats().state, 'idle')
  })

  await t.test('stop() called right after start(), neither awaited: the start is ended, whichever reaches the engine first', async () => {
    // Both calls run as futures on the engine's threads; when the stop got there first it found
    // nothing running (ERR_STATE) and the sync went on streaming. Repeated, since that order is a race.
    for (let i = 0; i < 15; i++) {
      const sync = new MongoElasticSync(options('small', { mode: 'stream' }))
      const starting = sync.start()
      const stopping = sync.stop()
      await assert.rejects(starting, (e) => e.code === 'ERR_STATE', `attempt ${i + 1}`)
      await stopping
      assert.equal(sync.stats().state, 'stopped', `attempt ${i + 1}`)
    }
  })

  await t.test('`await using` stops a running sync at the end of its scope, however it is left', async () => {
    // Node 20 has no `await using` syntax: the fixture is TypeScript, compiled as users compile it.
    const out = mkdtempSync(path.join(os.tmpdir(), 'await-using-'))
    t.after(() => rmSync(out, { recursive: true, force: true }))
    const tsc = require.resolve('typescript/bin/tsc')
    const args = ['--ignoreConfig', '--outDir', out, '--module', 'nodenext', '--target', 'ES2022', '--lib', 'ES2022,ESNext.Disposable', '--types', 'node', '--strict']
    const built = spawnSync(process.execPath, [tsc, ...args, path.join(HERE, 'fixtures', 'await-using.ts')], { encoding: 'utf8' })
    assert.equal(built.status, 0, `tsc: ${built.stdout}${built.stderr}`)
    const { useScoped } = require(path.join(out, 'await-using.js'))
    const streamingInside = async (sync) => {
      const streaming = nextEvent(sync, 'state', (e) => e.state === 'streaming')
      await sync.start()
      await streaming
      assert.equal(sync.stats().state, 'streaming')
    }
    const sync = await useScoped(() => new MongoElasticSync(options('small')), streamingInside)
    assert.equal(sync.stats().state, 'stopped', 'stopped when the scope ended')
    await sync.wait()
    let left
    await assert.rejects(
      useScoped(
        () => (left = new MongoElasticSync(options('small'))),
        async (s) => {
          await streamingInside(s)
          throw new Error('leaving the scope by an exception')
        },
      ),
      /leaving the scope/,
    )
    assert.equal(left.stats().state, 'stopped')
  })
})
