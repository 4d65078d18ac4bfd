// Part 3 (--only overhead), engine overhead: the engine (alone and with a JS transform) and the
// Node script copy into lib/fake-es.js, a loopback server that answers `_bulk` and discards the
// data, so the figures are the tools' own cost. --rounds rounds, alternating, best of each kept:
// short runs on a shared 2-core machine are easily disturbed, and a disturbance only ever makes a
// run slower.
'use strict'

const { runCopy } = require('../lib/run-copy')
const { readAll } = require('./limits')
const { startFakeEs } = require('../lib/fake-es')
const { sample } = require('../lib/proc')
const { round, median, per100k } = require('../lib/util')

const ok = (x) => x && !x.error && x.docsPerSec

/** One round of each tool against the fake server; appends each result to `rounds[tool]`. */
async function oneRound(run, n, rounds) {
  const { runId, dbName, step, fakeEs } = run
  const common = { mode: 'copy', mongoUrl: run.mongoUrl, esUrl: fakeEs.url, namespace: `${dbName}.docs` }
  const fakeCount = () => Promise.resolve(fakeEs.stats.actions)
  const withInFlight = (r) => (r && !r.error ? { ...r, maxBulkInFlight: fakeEs.stats.maxInFlight } : r)
  const engine = { ...common, checkpointDb: dbName, addonPath: run.addonDir }
  const tools = [
    ['engine', 'engine', 'engine.js', { ...engine, index: `bench-${runId}-fake-engine`, name: `bench-${runId}-fake${n}` }],
    ['engine + JS transform', 'engine', 'engine.js', { ...engine, index: `bench-${runId}-fake-engine-t`, name: `bench-${runId}-faket${n}`, transform: true }],
    ['node script', 'node script', 'node-script.js', { ...common, index: `bench-${runId}-fake-node` }],
  ].filter(([tool]) => !(run.opts.skipTransform && tool === 'engine + JS transform'))
  // The order turns each round (the engine first in odd rounds, the script in even ones): the
  // first read after the data is loaded or after another tool finds the server in another state.
  if (n % 2 === 0) tools.reverse()
  for (const [tool, label, script, config] of tools) {
    fakeEs.reset()
    rounds[tool].push(withInFlight(await step(`overhead: ${tool} (round ${n})`, () => runCopy(run, label, script, config, { countIndexed: fakeCount }))))
  }
  // The bare driver read of the same collection in the same round: the copy's read target (issue 19).
  rounds.read.push(await step(`overhead: bare driver read, batchSize 1000 (round ${n})`, () => readAll(run.db.collection('docs'), { batchSize: 1000 }, run.N)))
  rounds.count.push(await step(`overhead: estimatedDocumentCount (round ${n})`, () => countCost(run)))
}

/**
 * What one `estimatedDocumentCount` of the collection costs the server: the engine asks it once
 * before a copy (to plan its ranges and report progress), the Node script never. MongoDB reads it
 * from the collection's metadata; SecantusDB walks every record. Null without the server's PID.
 */
async function countCost(run) {
  const pid = run.serverPids.mongo
  if (!pid) return null
  const before = sample(pid)
  const t0 = performance.now()
  const count = await run.db.collection('docs').estimatedDocumentCount()
  const ms = performance.now() - t0
  const after = sample(pid)
  return { count, ms: round(ms), mongoSecPer100k: before && after ? per100k(after.cpuSec - before.cpuSec, run.N) : null }
}

/** The best round of each tool, with every round's throughput in its note. */
function best(rounds) {
  const runs = {}
  for (const [tool, list] of Object.entries(rounds)) {
    if (!list.length) continue // a tool left out (--skip-transform)
    const good = list.filter(ok)
    const top = good.length ? good.reduce((a, b) => (b.docsPerSec > a.docsPerSec ? b : a)) : list[list.length - 1]
    runs[tool] = { ...top, note: [top.note, `best of ${list.length} rounds: ${list.map((x) => x.docsPerSec ?? 'error').join(' / ')} docs/s`].filter(Boolean).join('; '), rounds: list }
  }
  return runs
}

/**
 * What the copy costs the source, engine against Node script, over every round (issue 19's
 * targets: MongoDB CPU per copied document and time to the first acknowledged batch, each
 * ≤ ×1.0). Single rounds differ by ±10–30% on this shared machine, so each tool's median and
 * the median of the rounds' own ratios (engine and script in the same round, their order turned).
 */
function sourceCost(rounds) {
  const pairs = rounds.engine.map((e, i) => [e, rounds['node script'][i], rounds.count?.[i]]).filter(([e, n]) => ok(e) && ok(n))
  const measure = (pick, pickCount) => {
    const ratios = pairs.map(([e, n]) => (pick(e) && pick(n) ? pick(e) / pick(n) : null)).filter(Number.isFinite)
    // The same ratio with the engine's one count taken off (each round's own count): what the
    // rest of the engine's copy costs, on a server that answers the count from metadata.
    const lessCount = pairs.map(([e, n, c]) => (pick(e) && pick(n) && c && Number.isFinite(pickCount(c)) ? (pick(e) - pickCount(c)) / pick(n) : null)).filter(Number.isFinite)
    return {
      engine: round(median(pairs.map(([e]) => pick(e))), 2),
      script: round(median(pairs.map(([, n]) => pick(n))), 2),
      ratio: round(median(ratios), 3),
      ratios: ratios.map((r) => round(r, 3)),
      count: round(median(pairs.map(([, , c]) => (c ? pickCount(c) : null))), 2),
      lessCount: round(median(lessCount), 3),
      lessCountRatios: lessCount.map((r) => round(r, 3)),
    }
  }
  if (!pairs.length) return null
  return {
    rounds: pairs.length,
    mongoCpu: measure((x) => x.serverCpu?.mongoSecPer100k, (c) => c.mongoSecPer100k),
    firstBatch: measure((x) => x.firstBatchMs, (c) => c.ms),
  }
}

/** results.overhead: the runs, the JS transform's cost and the engine's ratios to the Node script. */
async function overhead(run) {
  run.fakeEs = await startFakeEs()
  const rounds = { engine: [], 'engine + JS transform': [], 'node script': [], read: [], count: [] }
  for (let r = 1; r <= run.opts.rounds; r++) await oneRound(run, r, rounds)
  const reads = rounds.read.filter(ok)
  delete rounds.read
  const source = sourceCost(rounds)
  const counts = rounds.count
  delete rounds.count
  const runs = best(rounds)
  const read = reads.length ? Math.max(...reads.map((x) => x.docsPerSec)) : null
  await run.fakeEs.close()
  run.fakeEs = null
  const e = runs.engine
  const n = runs['node script']
  const h = runs['engine + JS transform']
  return {
    runs,
    sourceCost: source,
    counts,
    // Engine docs/s into the discarding endpoint ÷ the best bare driver read of the run (target ≥ 0.95).
    read: read ? { docsPerSec: read, rounds: reads, engineRatio: ok(e) ? round(e.docsPerSec / read, 3) : null, scriptRatio: ok(n) ? round(n.docsPerSec / read, 3) : null } : null,
    transformCost: ok(e) && ok(h) ? { docsPerSec: round(h.docsPerSec / e.docsPerSec, 3), cpuPerDoc: round(h.cpuSecPer100k / e.cpuSecPer100k, 3) } : null,
    ratios:
      ok(e) && ok(n)
        ? {
            docsPerSec: round(e.docsPerSec / n.docsPerSec, 3),
            cpuPerDoc: round(e.cpuSecPer100k / n.cpuSecPer100k, 3),
            peakRss: round(e.peakRssMb / n.peakRssMb, 3),
          }
        : null,
  }
}

module.exports = { overhead, sourceCost }
