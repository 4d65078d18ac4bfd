// Randomized fault schedules: during the copy and the stream, under a write load, a seeded mix
// of SIGKILLs of the sync's process (then a restart), MongoDB restarts, Elasticsearch stalls
// (past the request timeout: applied late), 429/5xx bursts, connection resets before and after
// the server applied a request, and slow replies (through the fault proxy). After each schedule
// the index equals the collection.
//
// STRESS_SCHEDULES (default 2) schedules run, seeded STRESS_SEED (default: the time) + i; a
// failure prints the seed and the schedule, and `STRESS_SEED=<seed> STRESS_SCHEDULES=1` replays
// its schedule (the same faults at the same delays; the sync's own timing varies). `npm run
// stress` runs 50.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { rng, runChild, serversFor, unique, waitFor, waitForMirror, withTimeout } = require('./helpers.js')
const { startFaultProxy } = require('./fault-proxy.js')
const { restartMongo } = require('../scripts/local-servers.js')

const SCHEDULES = Number(process.env.STRESS_SCHEDULES || 2)
const BASE_SEED = Number(process.env.STRESS_SEED || Date.now() % 1e9)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** The faults a step may bring, and what each does for its duration. */
const FAULTS = ['kill', 'mongoRestart', 'stall', 'status429', 'status5xx', 'resetBefore', 'resetAfter', 'slow']

/** A schedule: 5 steps, each a fault, a delay before it and a length (ms); at most one MongoDB restart. */
function makeSchedule(random) {
  const steps = []
  let restarts = 0
  for (let i = 0; i < 5; i++) {
    let fault = FAULTS[Math.floor(random() * FAULTS.length)]
    if (fault === 'mongoRestart' && restarts++ > 0) fault = 'kill'
    const status = fault === 'status5xx' ? [500, 502, 503, 504][Math.floor(random() * 4)] : 429
    // A stall outlasts the sync's 2 s request timeout: the request is applied after it was given up.
    const ms = fault === 'stall' ? 2500 + Math.floor(random() * 1500) : 300 + Math.floor(random() * 1200)
    steps.push({ fault, status, ms, afterMs: Math.floor(random() * 2500), forMs: 500 + Math.floor(random() * 2500) })
  }
  return steps
}

/** Bulk changes every 100 ms until stopped; write errors (a MongoDB restart) are counted. */
function startWriter(coll, random, docs) {
  let running = true
  let nextId = docs
  const totals = { ticks: 0, failures: 0 }
  const done = (async () => {
    while (running) {
      const ops = []
      for (let k = 0; k < 10; k++) {
        const id = Math.floor(random() * nextId)
        const r = random()
        if (r < 0.55) ops.push({ updateOne: { filter: { _id: id }, update: { $inc: { v: 1 } } } })
        else if (r < 0.7) ops.push({ deleteOne: { filter: { _id: id } } })
        else if (r < 0.9) ops.push({ insertOne: { document: { _id: nextId++, v: 0, s: 'new' } } })
        else ops.push({ replaceOne: { filter: { _id: id }, replacement: { v: -1, s: 'replaced' }, upsert: true } })
      }
      try {
        await coll.bulkWrite(ops, { ordered: false })
      } catch {
        totals.failures++ // during a MongoDB restart; a duplicate _id of an upsert race
      }
      totals.ticks++
      await sleep(100)
    }
  })()
  return {
    stop: async () => {
      running = false
      await done
      return totals
    },
  }
}

describe('randomized fault schedules', () => {
  const ctx = serversFor('stress')

  for (let i = 0; i < SCHEDULES; i++) {
    const seed = BASE_SEED + i
    test(`schedule ${i + 1}/${SCHEDULES} (seed ${seed}): the index equals the collection`, { timeout: 600000 }, async (t) => {
      const random = rng(seed)
      const schedule = makeSchedule(random)
      const canRestartMongo = ctx.started
      const proxy = await startFaultProxy(ctx.esUrl)
      t.after(() => proxy.close())
      const db = ctx.mongo.db(unique(`stress${i}`))
      t.after(() => db.dropDatabase().catch(() => {}))
      const coll = db.collection('c')
      const index = unique(`stress${i}`)
      const docs = 1500
      await coll.insertMany(Array.from({ length: docs }, (_, k) => ({ _id: k, v: 0, s: `doc ${k}` })))
      const options = {
        name: unique(`stress${i}`),
        mongo: { uri: ctx.mongoUrl },
        elasticsearch: { node: proxy.url, requestTimeoutMs: 2000 },
        collections: [{ namespace: `${db.databaseName}.c`, index }],
        batch: { maxDocs: 100, flushIntervalMs: 100 },
        copyRangeMinDocs: 500,
        retry: { initialDelayMs: 50, maxDelayMs: 1000 },
      }
      const log = []
      const say = (line) => log.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${line}`)
      const t0 = Date.now()
      let run = runChild(options)
      const children = [run]
      t.after(() => children.forEach((r) => r.child.kill('SIGKILL')))
      const writer = startWriter(coll, rng(seed * 7 + 1), docs)
      // start() refuses servers it cannot reach (documented): a process started during an outage
      // exits, and is started again as a supervisor would. Any other failure fails the schedule.
      const unreachable = (e) => /^ERR_(ES|MONGO)_UNREACHABLE$/.test(e.error?.code ?? e.code)
      const isFailure = (e) => (e.type === 'state' && e.state === 'failed') || e.type === 'start-failed'
      const failed = () => children.flatMap((r) => r.events).find((e) => isFailure(e) && !unreachable(e))
      let restarts = 0
      const restartIfDown = async () => {
        if (!run.events.some((e) => isFailure(e) && unreachable(e))) return false
        await run.exited
        await sleep(500)
        say(`restarted after ${run.events.find((e) => isFailure(e)).error?.code ?? 'an unreachable server'} at start`)
        restarts++
        run = runChild(options)
        children.push(run)
        return false
      }
      try {
        // The first step comes once the copy has written something: faults hit the copy and the stream.
        await waitFor('the copy to start', () => run.events.some((e) => e.type === 'batch') || failed(), 120000, 20)
        for (const step of schedule) {
          await sleep(step.afterMs)
          await restartIfDown()
          const phase = run.events.filter((e) => e.type === 'state').at(-1)?.state
          say(`${step.fault}${step.fault.startsWith('status') ? ` ${step.status}` : ''} for ${step.forMs} ms (while ${phase})`)
          switch (step.fault) {
            case 'kill':
              run.child.kill('SIGKILL')
              await run.exited
              await sleep(step.forMs / 4)
              run = runChild(options)
              children.push(run)
              break
            case 'mongoRestart':
              if (canRestartMongo) await restartMongo(ctx.servers)
              break
            default:
              proxy.set(
                {
                  stall: { kind: 'stall', ms: step.ms },
                  status429: { kind: 'status', status: 429 },
                  status5xx: { kind: 'status', status: step.status },
                  resetBefore: { kind: 'reset' },
                  resetAfter: { kind: 'resetAfter' },
                  slow: { kind: 'slow', ms: step.ms },
                }[step.fault],
              )
              await sleep(step.forMs)
              proxy.set({ kind: 'pass' })
          }
          assert.ok(!failed(), `the sync failed: ${JSON.stringify(failed())}`)
        }
        const writes = await writer.stop()
        say(`writer stopped: ${writes.ticks} bulk writes, ${writes.failures} failed`)
        await waitFor('the last child to stream', async () => (await restartIfDown()) || run.events.some((e) => e.type === 'state' && e.state === 'streaming') || failed(), 180000)
        assert.ok(!failed(), `the sync failed: ${JSON.stringify(failed())}`)
        const diff = await waitForMirror(ctx, coll, index, (d) => d, 180000)
        assert.equal(diff.count, await coll.countDocuments())
        run.child.kill('SIGTERM')
        const [code] = await withTimeout(run.exited, 60000, 'the sync did not exit after SIGTERM')
        assert.equal(code, 0)
        const deadLetters = children.flatMap((r) => r.events).filter((e) => e.type === 'deadLetter')
        assert.equal(deadLetters.length, 0, `no dead letters: ${JSON.stringify(deadLetters[0])}`)
        say(`equal: ${diff.count} documents; ${children.length} processes (${restarts} after a refused start), ${proxy.counts.injected} faults injected by the proxy`)
        t.diagnostic(`schedule: ${log.join('; ')}`)
      } catch (e) {
        await writer.stop()
        e.message = `seed ${seed} (replay: STRESS_SEED=${seed} STRESS_SCHEDULES=1 node --test __test__/stress.test.mjs)\nschedule:\n  ${log.join('\n  ')}\n${e.message}`
        throw e
      }
    })
  }
})
