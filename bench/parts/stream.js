// Part 4 (--only stream), stream latency: updates written to MongoDB at a steady rate, each timed
// until the index shows its value (lib/latency.js), for each tool streaming, plus a baseline where
// the harness writes the same pattern straight to `_bulk`. The asked-for pass (500/s) is preceded
// by one at 100/s, closer to what the search server can absorb, so that the tools' own latency is
// less hidden behind the server's backlog.
'use strict'

const path = require('node:path')
const { ObjectId } = require('mongodb')
const { ToolProcess } = require('../lib/proc')
const { esRequest, deleteIndex } = require('../lib/es')
const { measureLatency, waitForProbe } = require('../lib/latency')
const { redisProblem } = require('../lib/redis')
const { log, withTimeout, round, per100k } = require('../lib/util')

const TOOLS = path.resolve(__dirname, '..', 'tools')

/** The options of lib/latency.js for one pass into `index`; stamps increase across passes and runs. */
function latencyOptions(run, S) {
  let k = 0
  return (index, pass) => ({
    esUrl: run.esUrl,
    index,
    ids: run.streamIds,
    updates: pass.updates,
    perBatch: pass.perBatch,
    everyMs: pass.everyMs,
    pollMs: S.pollMs,
    drainMs: S.drainLimitMs,
    log,
    stampBase: ++k * 10_000_000,
  })
}

/** Count, p50 / p95 / max ms of request durations. */
function requestStats(list) {
  if (!list.length) return null
  const sorted = [...list].sort((a, b) => a - b)
  const at = (q) => round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))], 1)
  return { count: list.length, p50Ms: at(0.5), p95Ms: at(0.95), maxMs: round(sorted[sorted.length - 1], 1) }
}

/** What the search server alone gives: the same pattern written straight to `_bulk`. */
async function baseline(run, S, latencyOpts) {
  const { esUrl } = run
  const index = `bench-${run.runId}-stream-raw`
  run.indices.add(index)
  await esRequest(esUrl, 'PUT', `/${index}`, {})
  const requestMs = []
  const write = async (batch) => {
    const t0 = performance.now()
    const body = batch.map((u) => `{"index":{"_id":"${u.id}"}}\n${JSON.stringify({ ...run.streamSources.get(u.id), stamp: u.stamp, writtenAt: new Date().toISOString() })}\n`).join('')
    const r = await esRequest(esUrl, 'POST', `/${index}/_bulk`, body, { ndjson: true })
    if (r.status !== 200) throw new Error(`baseline _bulk failed: HTTP ${r.status}`)
    requestMs.push(performance.now() - t0)
  }
  try {
    const out = { passes: {}, note: 'the harness writes each batch to `_bulk` itself, no MongoDB' }
    for (const pass of S.passes) out.passes[pass.name] = { latency: await measureLatency({ ...latencyOpts(index, pass), write }) }
    // The search server's own time per `_bulk` request, so that its stalls are not read as a tool's latency.
    out.bulkRequests = requestStats(requestMs)
    return out
  } finally {
    await deleteIndex(esUrl, index)
  }
}

/**
 * A probe update (on several documents, in case a tool cannot index some) proves the stream is
 * live before timing starts; resolves with the ms it took to show.
 */
async function probe(run, streamColl, index) {
  const value = Date.now()
  const probeIds = run.streamIds.slice(0, 20)
  await streamColl.updateMany({ _id: { $in: probeIds.map((id) => new ObjectId(id)) } }, { $set: { probe: value } })
  const probeMs = await waitForProbe(run.esUrl, index, probeIds, value, 90000)
  if (probeMs === null) throw new Error('stream not live: a probe update was not visible within 90 s')
  return probeMs
}

/** One tool streaming in its own process (tools/<script>), timed pass by pass. */
async function runStream(run, S, { latencyOpts, streamColl, mongoWrite }, label, script, config, { flushIntervalMs } = {}) {
  run.indices.add(config.index)
  const p = new ToolProcess(path.join(TOOLS, script), config, { label, log })
  try {
    await p.waitFor('loaded', 60000)
    p.send({ type: 'go' })
    await p.waitFor('streaming', 60000 + run.opts.streamDocs * 20)
    const out = { probeMs: round(await probe(run, streamColl, config.index)), passes: {} }
    for (const pass of S.passes) {
      const m0 = p.mark(`${pass.name}-start`)
      const latency = await withTimeout(measureLatency({ ...latencyOpts(config.index, pass), write: mongoWrite }), 240000, `${label} latency`)
      const m1 = p.mark(`${pass.name}-end`)
      const cpuSec = m1 && m0 ? m1.cpuSec - m0.cpuSec : null
      const target = flushIntervalMs == null ? null : flushIntervalMs + 50
      out.passes[pass.name] = {
        latency,
        cpuSec: round(cpuSec, 2),
        cpuSecPer100kEvents: per100k(cpuSec, latency.updates),
        targetP99Ms: target,
        p99VsTarget: target && latency.p99Ms !== null ? round(latency.p99Ms / target, 2) : null,
      }
    }
    p.send({ type: 'counters' })
    const c = await p.waitFor('counters', 5000).catch(() => null)
    Object.assign(out, { peakRssMb: round(p.peak.hwmKb / 1024), counters: c?.counters, notes: c?.notes, stages: c?.stats?.stages })
    return out
  } finally {
    await p.stop().catch(() => {})
    await deleteIndex(run.esUrl, config.index)
  }
}

/** results.stream: the passes, then the baseline and each tool's run. */
async function stream(run) {
  const { runId, dbName, step, addonDir } = run
  const opts = run.opts
  const passes = [
    { name: '100/s', perBatch: 2, everyMs: 20, updates: Math.max(2, Math.round(opts.updates / 2)) },
    { name: '500/s', perBatch: 10, everyMs: 20, updates: opts.updates },
  ]
  const S = { pollMs: 20, drainLimitMs: 45000, passes, runs: {} }
  const streamColl = run.db.collection('stream_docs')
  const mongoWrite = (batch) =>
    streamColl.bulkWrite(
      batch.map((u) => ({ updateOne: { filter: { _id: new ObjectId(u.id) }, update: { $set: { stamp: u.stamp, writtenAt: new Date() } } } })),
      { ordered: true },
    )
  const latencyOpts = latencyOptions(run, S)
  const tool = (label, script, config, o) => runStream(run, S, { latencyOpts, streamColl, mongoWrite }, label, script, config, o)

  S.runs.baseline = await step('stream: raw _bulk baseline (no sync tool)', () => baseline(run, S, latencyOpts))
  const common = { mode: 'stream', mongoUrl: run.mongoUrl, esUrl: run.esUrl, namespace: `${dbName}.stream_docs` }
  const engine = { ...common, checkpointDb: dbName, addonPath: addonDir }
  S.runs['engine (flushIntervalMs default 1000)'] = await step('stream: engine, default flush interval', () =>
    tool('engine', 'engine.js', { ...engine, index: `bench-${runId}-stream-engine`, name: `bench-${runId}-stream` }, { flushIntervalMs: 1000 }),
  )
  S.runs['engine (flushIntervalMs 100)'] = await step('stream: engine, flushIntervalMs 100', () =>
    tool('engine 100ms', 'engine.js', { ...engine, index: `bench-${runId}-stream-engine100`, name: `bench-${runId}-stream100`, flushIntervalMs: 100 }, { flushIntervalMs: 100 }),
  )
  S.runs['node script'] = await step('stream: node script', () => tool('node script', 'node-script.js', { ...common, index: `bench-${runId}-stream-node` }))
  if (opts.skipM2e) S.runs.mongo2elastic = { skipped: '--skip-mongo2elastic' }
  else {
    const why = await redisProblem()
    S.runs.mongo2elastic = why
      ? { skipped: `not run: ${why}` }
      : await step('stream: mongo2elastic', async () => {
          const r = await tool('mongo2elastic', 'mongo2elastic.js', { ...common, index: `bench-${runId}-stream-m2e`, uniqueId: `bench-${runId}-stream` })
          r.note = 'its change-stream queue flushes at 500 events or after 30 s (its defaults)'
          return r
        })
  }
  return S
}

module.exports = { stream }
