// Several instances of one sync (same `name`) in real processes: one holds the lease and syncs,
// the others stand by; a killed leader is replaced within the bound, a paused one can no longer
// write or save checkpoints once it wakes, and a clean stop hands over at once.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { once } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { onJsonLines, serversFor, unique, waitFor, waitForMirror } = require('./helpers.js')
const HERE = path.dirname(new URL(import.meta.url).pathname)
const FIXTURE = path.join(HERE, 'fixtures', 'run-instance.js')
const CLI = path.join(HERE, '..', 'scripts', 'cli.js')

/** Starts one instance; `events` fills with its events as they arrive. */
function instance(t, options) {
  const child = spawn(process.execPath, [FIXTURE, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'inherit'] })
  const run = { child, events: [], exited: once(child, 'exit'), send: (command) => child.stdin.write(command + '\n') }
  onJsonLines(child.stdout, (event) => run.events.push(event))
  t.after(() => {
    child.kill('SIGCONT')
    child.kill('SIGKILL')
  })
  return run
}

const acquired = (run) => run.events.filter((e) => e.type === 'leadership' && e.change === 'acquired')
const lastState = (run) => run.events.filter((e) => e.type === 'state').at(-1)?.state

/** The one instance that holds the lease (at a term above `afterTerm`), once it streams. */
async function leader(runs, afterTerm = 0, timeoutMs = 60000) {
  return waitFor(
    `a leader above term ${afterTerm}`,
    () => {
      const leaders = runs.filter((r) => r.child.exitCode === null && acquired(r).some((e) => e.term > afterTerm))
      assert.ok(leaders.length <= 1, `two leaders at once: ${leaders.map((r) => r.child.pid)}`)
      return leaders.length === 1 && lastState(leaders[0]) === 'streaming' && leaders[0]
    },
    timeoutMs,
  )
}

/** A steady load of bulk changes (`ops` every `pauseMs`, on `_id`s below `ids`) until `stop()` is called. */
function writeLoad(coll, { ops: count = 20, pauseMs = 100, ids = 400 } = {}) {
  let writing = true
  let next = 100000
  const done = (async () => {
    while (writing) {
      const ops = []
      for (let k = 0; k < count; k++) {
        const id = Math.floor(Math.random() * ids)
        if (k % 4 === 3) ops.push({ insertOne: { document: { _id: next++, v: 0 } } })
        else ops.push({ updateOne: { filter: { _id: id }, update: { $inc: { v: 1 } } } })
      }
      await coll.bulkWrite(ops, { ordered: false })
      await new Promise((r) => setTimeout(r, pauseMs))
    }
  })()
  return async () => {
    writing = false
    await done
  }
}

describe('several instances with one name', () => {
  const ctx = serversFor('instances')

  async function fixture(prefix, lease) {
    const db = ctx.mongo.db(unique(prefix))
    const coll = db.collection('orders')
    await coll.insertMany(Array.from({ length: 400 }, (_, i) => ({ _id: i, v: 0 })))
    const index = unique(`${prefix}-orders`)
    const options = {
      name: unique(prefix),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.orders`, index }],
      batch: { maxDocs: 200, flushIntervalMs: 100 },
      ...(lease ? { lease } : {}),
    }
    const checkpoints = ctx.mongo.db('mongo_elastic_sync').collection('checkpoints')
    const checkpoint = () => checkpoints.findOne({ _id: `${options.name}:${db.databaseName}.orders` })
    return { coll, index, options, checkpoint }
  }

  it('one of three syncs, the others stand by; SIGKILL of the leader under load: another takes over, ES equals MongoDB', { timeout: 300000 }, async (t) => {
    const { coll, index, options } = await fixture('kill')
    const runs = [instance(t, options), instance(t, options), instance(t, options)]
    const first = await leader(runs)
    const others = runs.filter((r) => r !== first)
    await waitFor('the others to stand by', () => others.every((r) => lastState(r) === 'standby'), 60000)
    await waitForMirror(ctx, coll, index, (d) => d, 120000)

    const stopLoad = writeLoad(coll)
    await new Promise((r) => setTimeout(r, 1500))
    first.child.kill('SIGKILL')
    await first.exited
    // The default lease (10 s) bounds the failover: under 15 s to acquire.
    const second = await waitFor(
      'another instance to acquire the lease',
      () => others.find((r) => acquired(r).some((e) => e.term > acquired(first)[0].term)),
      15000,
    )
    await leader(others, acquired(first)[0].term)
    await new Promise((r) => setTimeout(r, 1500))
    await stopLoad()
    const diff = await waitForMirror(ctx, coll, index, (d) => d, 120000)
    assert.equal(diff.count, await coll.countDocuments())
    const third = others.find((r) => r !== second)
    assert.equal(acquired(third).length, 0, 'one leader only')
    assert.equal(lastState(third), 'standby')
  })

  it('a leader paused past its lease wakes up refused: no late writes, its checkpoint saves never regress', { timeout: 300000 }, async (t) => {
    // The default lease: a paused holder is alive, so only its lease running out lets another in.
    const { coll, index, options, checkpoint } = await fixture('pause')
    const runs = [instance(t, options), instance(t, options)]
    const first = await leader(runs)
    const other = runs.find((r) => r !== first)
    await waitForMirror(ctx, coll, index, (d) => d, 120000)
    const firstTerm = acquired(first)[0].term

    first.child.kill('SIGSTOP')
    // The default lease (10 s) bounds the failover: under 15 s to acquire.
    await waitFor('the standby to take the lease over', () => acquired(other).some((e) => e.term > firstTerm), 15000)
    await leader([other], firstTerm)
    await coll.bulkWrite(Array.from({ length: 100 }, (_, i) => ({ updateOne: { filter: { _id: i }, update: { $set: { v: 7 } } } })))
    await waitForMirror(ctx, coll, index, (d) => d, 120000)
    const taken = await waitFor('the new term to save the checkpoint', async () => {
      const cp = await checkpoint()
      return cp?.term > firstTerm && cp.resumeToken && cp
    })
    const batchesBefore = first.events.filter((e) => e.type === 'batch').length

    first.child.kill('SIGCONT')
    await waitFor('the woken leader to know it lost the lease', () => first.events.some((e) => e.type === 'leadership' && e.change === 'lost'), 30000)
    await waitFor('the woken leader to stand by', () => lastState(first) === 'standby', 30000)
    // It read the changes made while it slept, but wrote none of them.
    assert.equal(first.events.filter((e) => e.type === 'batch').length, batchesBefore, 'no write after the lease was lost')
    const after = await checkpoint()
    assert.ok(after.term >= taken.term, `the checkpoint's term went back: ${after.term} < ${taken.term}`)
    await coll.bulkWrite(Array.from({ length: 50 }, (_, i) => ({ updateOne: { filter: { _id: 200 + i }, update: { $set: { v: 8 } } } })))
    const diff = await waitForMirror(ctx, coll, index, (d) => d, 120000)
    assert.equal(diff.count, 400)
    assert.equal(lastState(other), 'streaming', 'the new leader kept the lease')
  })

  it('a clean stop hands over at once (long before the lease would run out)', { timeout: 300000 }, async (t) => {
    const { coll, index, options } = await fixture('handover', { durationMs: 120000 })
    const runs = [instance(t, options), instance(t, options)]
    const first = await leader(runs)
    const other = runs.find((r) => r !== first)
    await waitFor('the other to stand by', () => lastState(other) === 'standby', 60000)
    first.send('stop')
    await waitFor('the first to stop', () => first.events.some((e) => e.type === 'stopped-by-fixture'), 60000)
    // The stopped process stays alive: only the release lets the standby in before 120 s.
    await leader([other], acquired(first)[0].term, 30000)
    other.send('stats')
    const stats = await waitFor('stats', () => other.events.find((e) => e.type === 'stats'))
    assert.equal(stats.role, 'leader')
    assert.deepEqual(stats.ownedCollections, [`${coll.dbName}.orders`])
    await coll.insertOne({ _id: 'after-handover', v: 1 })
    await waitForMirror(ctx, coll, index, (d) => d, 120000)
    assert.equal(first.child.exitCode, null, 'the stopped instance is still running')
  })

  it('the CLI prints its role: the second of two stands by, and takes over when the first is interrupted', { timeout: 300000 }, async (t) => {
    const { options } = await fixture('cli')
    const args = ['--mongo', ctx.mongoUrl, '--es', ctx.esUrl, '--collections', options.collections[0].namespace, '--name', options.name]
    const cli = () => {
      const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      const run = { child, out: '', exited: once(child, 'exit') }
      child.stdout.on('data', (d) => (run.out += d))
      t.after(() => child.kill('SIGKILL'))
      return run
    }
    const first = cli()
    await waitFor('the first CLI to stream', () => first.out.includes('state: streaming'), 60000)
    assert.match(first.out, /lease acquired \(term \d+\): this instance syncs/)
    assert.match(first.out, /syncing .*\.orders/)
    const second = cli()
    await waitFor('the second CLI to stand by', () => /standby: .* holds the lease \(term \d+\)/.test(second.out) && second.out.includes('state: standby'), 60000)
    first.child.kill('SIGINT')
    assert.equal((await first.exited)[0], 0)
    await waitFor('the second CLI to take over', () => /lease acquired \(term \d+\)/.test(second.out) && second.out.includes('state: streaming'), 60000)
  })
})

describe('a partitioned group (instances: { group })', () => {
  const ctx = serversFor('partition')
  const COLLECTIONS = 12

  /** Twelve collections of 100 documents, each with an index of its own, and the options of a group over them. */
  async function fixture(prefix) {
    const db = ctx.mongo.db(unique(prefix))
    const colls = []
    for (let i = 0; i < COLLECTIONS; i++) {
      const coll = db.collection(`c${String(i).padStart(2, '0')}`)
      await coll.insertMany(Array.from({ length: 100 }, (_, k) => ({ _id: k, v: 0 })))
      colls.push({ coll, namespace: `${db.databaseName}.${coll.collectionName}`, index: unique(`${prefix}-${coll.collectionName}`) })
    }
    const options = {
      name: unique(prefix),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: colls.map(({ namespace, index }) => ({ namespace, index })),
      batch: { maxDocs: 200, flushIntervalMs: 100 },
      instances: { group: 'workers' },
    }
    const leases = () => ctx.mongo.db('mongo_elastic_sync').collection('checkpoints').find({ kind: 'lease', sync: options.name, ns: { $exists: true } }).toArray()
    return { colls, options, leases }
  }

  /** The collections `run` owns, as its last `assignment` event says. */
  const owned = (run) => run.events.filter((e) => e.type === 'assignment').at(-1)?.collections ?? []

  /** Waits until the live runs own every collection, each exactly once, in fair shares. */
  async function settled(runs, namespaces, timeoutMs = 60000) {
    const live = runs.filter((r) => r.child.exitCode === null && r.child.signalCode === null)
    return waitFor(
      `${namespaces.length} collections split over ${live.length} instances`,
      () => {
        const all = live.flatMap(owned).sort()
        const shares = live.map((r) => owned(r).length)
        const fair = Math.max(...shares) - Math.min(...shares) <= 1
        return JSON.stringify(all) === JSON.stringify([...namespaces].sort()) && fair && shares
      },
      timeoutMs,
    )
  }

  async function mirrored(colls) {
    for (const { coll, index } of colls) {
      const diff = await waitForMirror(ctx, coll, index, (d) => d, 120000)
      assert.equal(diff.count, await coll.countDocuments(), `${index}: ES equals MongoDB`)
    }
  }

  /** Light writes on every collection (about 60 changes/s in all). */
  function loadAll(colls) {
    const stops = colls.map(({ coll }) => writeLoad(coll, { ops: 2, pauseMs: 400, ids: 100 }))
    return () => Promise.all(stops.map((stop) => stop()))
  }

  it('three instances over 12 collections: each owned by exactly one; SIGKILL of one under writes: the other two take its collections within the lease bound, ES equals MongoDB', { timeout: 400000 }, async (t) => {
    const { colls, options, leases } = await fixture('part-kill')
    const namespaces = colls.map((c) => c.namespace)
    const runs = [instance(t, options), instance(t, options), instance(t, options)]
    assert.deepEqual(await settled(runs, namespaces), [4, 4, 4])
    const held = await leases()
    assert.equal(held.length, COLLECTIONS, 'one lease per collection')
    assert.equal(new Set(held.map((l) => l.ns)).size, COLLECTIONS)
    assert.ok(held.every((l) => typeof l.holder === 'string' && l.term >= 1), 'every lease held')
    await mirrored(colls)
    runs[0].send('stats')
    const stats = await waitFor('stats', () => runs[0].events.find((e) => e.type === 'stats'))
    assert.equal(stats.role, 'member')
    assert.deepEqual([...stats.ownedCollections].sort(), [...owned(runs[0])].sort())

    const stopLoad = loadAll(colls)
    await new Promise((r) => setTimeout(r, 1500))
    const victim = owned(runs[0])
    runs[0].child.kill('SIGKILL')
    await runs[0].exited
    const killedAt = Date.now()
    // The default lease (10 s) bounds the takeover.
    await settled(runs.slice(1), namespaces, 15000)
    const tookMs = Date.now() - killedAt
    assert.ok(tookMs < 15000, `taken over in ${tookMs} ms`)
    assert.ok(victim.every((ns) => runs.slice(1).some((r) => owned(r).includes(ns))))
    await new Promise((r) => setTimeout(r, 1500))
    await stopLoad()
    await mirrored(colls)
    assert.deepEqual(await settled(runs.slice(1), namespaces), [6, 6])
  })

  it('a group over a namespaces pattern: the collections found are split, one created while it runs is owned by exactly one, ES equals MongoDB', { timeout: 300000 }, async (t) => {
    const db = ctx.mongo.db(unique('partpat'))
    const prefix = unique('partpat')
    const colls = []
    const add = async (name) => {
      const coll = db.collection(name)
      await coll.insertMany(Array.from({ length: 50 }, (_, k) => ({ _id: k, v: 0 })))
      colls.push({ coll, namespace: `${db.databaseName}.${name}`, index: `${prefix}-${name}` })
    }
    for (let i = 0; i < 6; i++) await add(`p${i}`)
    const options = {
      name: unique('partpat'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      namespaces: { include: [`${db.databaseName}\\..*`], discoveryIntervalMs: 500, defaults: { index: `${prefix}-{coll}` } },
      batch: { maxDocs: 200, flushIntervalMs: 100 },
      instances: { group: 'workers' },
    }
    const runs = [instance(t, options), instance(t, options)]
    assert.deepEqual(await settled(runs, colls.map((c) => c.namespace)), [3, 3])
    await mirrored(colls)
    await add('p6')
    const shares = await settled(runs, colls.map((c) => c.namespace))
    assert.deepEqual([...shares].sort(), [3, 4])
    await colls[6].coll.updateOne({ _id: 1 }, { $set: { v: 1 } })
    await colls[0].coll.deleteOne({ _id: 2 })
    await mirrored(colls)
  })

  it('the CLI runs as a member of the group and prints its share as it changes', { timeout: 300000 }, async (t) => {
    const { colls, options } = await fixture('part-cli')
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'part-cli-'))
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
    const file = path.join(dir, 'sync.json')
    fs.writeFileSync(file, JSON.stringify(options))
    const cli = () => {
      const child = spawn(process.execPath, [CLI, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
      const run = { child, out: '', exited: once(child, 'exit') }
      child.stdout.on('data', (d) => (run.out += d))
      t.after(() => child.kill('SIGKILL'))
      return run
    }
    const shares = (run) => [...run.out.matchAll(/Z syncing ([^\n]*)\n/g)].map((m) => m[1].split(', ').length)
    const first = cli()
    await waitFor('the first CLI to sync all 12', () => shares(first).at(-1) === COLLECTIONS && first.out.includes('state: streaming'), 60000)
    const second = cli()
    await waitFor('each CLI to print a share of 6', () => shares(first).at(-1) === 6 && shares(second).at(-1) === 6, 60000)
    first.child.kill('SIGINT')
    assert.equal((await first.exited)[0], 0)
    await waitFor('the second CLI to sync all 12 again', () => shares(second).at(-1) === COLLECTIONS, 30000)
    await mirrored(colls)
  })

  it('a rolling restart of all three under writes loses nothing; every collection stays owned or is being handed over', { timeout: 600000 }, async (t) => {
    const { colls, options, leases } = await fixture('part-roll')
    const namespaces = colls.map((c) => c.namespace)
    const runs = [instance(t, options), instance(t, options), instance(t, options)]
    await settled(runs, namespaces)
    await mirrored(colls)
    // Watches the leases: a collection may be without a holder only while it is handed over.
    const unheldSince = new Map()
    let longestUnheldMs = 0
    let watching = true
    const watcher = (async () => {
      while (watching) {
        const now = Date.now()
        const byNs = new Map((await leases()).map((l) => [l.ns, l]))
        for (const ns of namespaces) {
          const holder = byNs.get(ns)?.holder
          if (holder) unheldSince.delete(ns)
          else if (!unheldSince.has(ns)) unheldSince.set(ns, now)
          else longestUnheldMs = Math.max(longestUnheldMs, now - unheldSince.get(ns))
        }
        await new Promise((r) => setTimeout(r, 100))
      }
    })()
    const stopLoad = loadAll(colls)
    const live = [...runs]
    for (let i = 0; i < 3; i++) {
      const old = live.shift()
      old.send('stop')
      await waitFor('the instance to stop', () => old.events.some((e) => e.type === 'stopped-by-fixture'), 60000)
      assert.deepEqual(owned(old), [], 'a stopped instance owns nothing')
      old.child.kill('SIGKILL')
      await old.exited
      await settled(live, namespaces, 30000)
      live.push(instance(t, options))
      assert.deepEqual(await settled(live, namespaces, 60000), [4, 4, 4])
    }
    await new Promise((r) => setTimeout(r, 1000))
    await stopLoad()
    watching = false
    await watcher
    assert.ok(longestUnheldMs < 5000, `a collection went without a holder for ${longestUnheldMs} ms`)
    await mirrored(colls)
  })
})
