// Part (--only filtered), a filtered collection's stream throughput against an unfiltered one's
// (issue 19): each change of a collection with a `filter` is checked against MongoDB (one batched
// lookup per batch), an unfiltered one's is not. Both engines follow the same collection into the
// discarding endpoint (lib/fake-es.js); they are stopped, `--updates` updates are written (a
// backlog), and each is started again and timed until the endpoint has received every update:
// the catch-up rate is the stream's throughput, not MongoDB's write rate. The filter matches
// every document, so both write the same.
'use strict'

const path = require('node:path')
const { ToolProcess, sample } = require('../lib/proc')
const { startFakeEs } = require('../lib/fake-es')
const { log, round, per100k } = require('../lib/util')

const TOOLS = path.resolve(__dirname, '..', 'tools')
const CHUNK = 1000

/** Documents of the part's collection: small, each with the field the filter reads. */
async function seed(coll, n) {
  await coll.deleteMany({})
  for (let i = 0; i < n; i += CHUNK) {
    const docs = Array.from({ length: Math.min(CHUNK, n - i) }, (_, k) => ({ _id: i + k, kind: (i + k) % 2 ? 'odd' : 'even', n: 0, pad: 'x'.repeat(200) }))
    await coll.insertMany(docs, { ordered: false })
  }
}

/** `updates` single-document updates spread over the collection's `n` documents, in bulk writes. */
async function backlog(coll, n, updates) {
  for (let i = 0; i < updates; i += CHUNK) {
    const ops = Array.from({ length: Math.min(CHUNK, updates - i) }, (_, k) => ({ updateOne: { filter: { _id: (i + k) % n }, update: { $inc: { n: 1 } } } }))
    await coll.bulkWrite(ops, { ordered: false })
  }
}

/** Runs the engine on `variant` until `until()` holds (or the bound); its figures. */
async function runEngine(run, variant, until, boundMs) {
  const pids = run.serverPids
  const p = new ToolProcess(path.join(TOOLS, 'engine.js'), variant.config, { label: `filtered: ${variant.label}`, log })
  try {
    await p.waitFor('loaded', 60000)
    const m0 = p.mark('start')
    const s0 = pids.mongo ? sample(pids.mongo) : null
    const t0 = performance.now()
    p.send({ type: 'go' })
    const deadline = t0 + boundMs
    while (!(await until()) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    const seconds = (performance.now() - t0) / 1000
    const m1 = p.mark('done')
    const s1 = pids.mongo ? sample(pids.mongo) : null
    return { seconds, cpuSec: m1 && m0 ? m1.cpuSec - m0.cpuSec : null, mongoCpuSec: s0 && s1 ? s1.cpuSec - s0.cpuSec : null, done: await until() }
  } finally {
    await p.stop().catch(() => {})
  }
}

/** results.filtered: each variant's catch-up throughput and CPU, and the filtered ÷ unfiltered ratios. */
async function filtered(run) {
  const { runId, dbName } = run
  const docs = Math.min(run.N, 5000)
  const updates = run.opts.updates
  const coll = run.db.collection('filtered_docs')
  await seed(coll, docs)
  const fakeEs = await startFakeEs()
  const base = { mode: 'stream', mongoUrl: run.mongoUrl, esUrl: fakeEs.url, namespace: `${dbName}.filtered_docs`, checkpointDb: dbName, addonPath: run.addonDir }
  const variants = [
    { label: 'unfiltered', config: { ...base, index: `bench-${runId}-unfiltered`, name: `bench-${runId}-unfiltered` } },
    { label: 'filtered', config: { ...base, index: `bench-${runId}-filtered`, name: `bench-${runId}-filtered`, filter: { kind: { $in: ['odd', 'even'] } } } },
  ]
  try {
    // The copy, then a clean stop: each engine's checkpoint now stands before the backlog.
    for (const v of variants) {
      fakeEs.reset()
      const copied = await runEngine(run, v, async () => fakeEs.stats.actions >= docs, 120000)
      if (!copied.done) throw new Error(`filtered: ${v.label} did not copy ${docs} documents within 120 s (${fakeEs.stats.actions})`)
    }
    await backlog(coll, docs, updates)
    const runs = {}
    for (const v of variants) {
      fakeEs.reset()
      const r = await runEngine(run, v, async () => fakeEs.stats.actions >= updates, 60000 + updates * 20)
      runs[v.label] = {
        updates,
        received: fakeEs.stats.actions,
        seconds: round(r.seconds, 2),
        changesPerSec: round(fakeEs.stats.actions / r.seconds),
        cpuSecPer100k: per100k(r.cpuSec, fakeEs.stats.actions),
        mongoCpuSecPer100k: per100k(r.mongoCpuSec, fakeEs.stats.actions),
        ...(r.done ? {} : { error: `received ${fakeEs.stats.actions} of ${updates} within the bound` }),
      }
    }
    const [u, f] = [runs.unfiltered, runs.filtered]
    const ok = (x) => x && !x.error
    return {
      docs,
      updates,
      runs,
      ratios: ok(u) && ok(f) ? { changesPerSec: round(f.changesPerSec / u.changesPerSec, 3), cpuPerChange: round(f.cpuSecPer100k / u.cpuSecPer100k, 3), mongoCpuPerChange: round(f.mongoCpuSecPer100k / u.mongoCpuSecPer100k, 3) } : null,
      note: 'catch-up of a backlog of single-document updates into the discarding endpoint, from process start (start-up included) until every update was received; the filter matches every document',
    }
  } finally {
    await fakeEs.close()
    await coll.drop().catch(() => {})
  }
}

module.exports = { filtered }
