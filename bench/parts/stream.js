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
const { measureLatency, waitForProbe, percentile } = require('../lib/latency')
const { redisProblem } = require('../lib/redis')
const { log, withTimeout, round, per100k } = require('../lib/util')
const { ENGINE_VARIANTS } = require('../lib/options')

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

/** Count, p50 / p95 / p99 / max ms of request durations. */
function requestStats(list) {
  if (!list.length) return null
  const sorted = [...list].sort((a, b) => a - b)
  const at = (q) => round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))], 1)
  return { count: list.length, p50Ms: at(0.5), p95Ms: at(0.95), p99Ms: at(0.99), maxMs: round(sorted[sorted.length - 1], 1) }
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

/** The tool's counters now (its stream batches' times and, for the engine, `stats()`); null if it does not answer. */
async function sampleTool(p) {
  const reply = p.waitForNext('counters', 5000).catch(() => null)
  p.send({ type: 'counters' })
  return reply
}

/** Stage totals between two `stats().stages` samples: count, total and average ms of each. */
function stageDiff(a, b) {
  if (!a || !b) return null
  const out = {}
  for (const [name, x] of Object.entries(b)) {
    const y = a[name] || { count: 0, totalMs: 0 }
    const count = x.count - y.count
    out[name] = { count, totalMs: round(x.totalMs - y.totalMs, 1), avgMs: count ? round((x.totalMs - y.totalMs) / count, 2) : null }
  }
  return out
}

/** What the tool's own write requests took during one pass (from its samples before and after). */
function passRequests(c0, c1) {
  const before = c0?.batchMs?.length ?? 0
  return requestStats((c1?.batchMs || []).slice(before))
}

/**
 * A bare change-stream reader in the harness, alongside a tool's pass: the time from just before
 * each update's write to its event here (no lookup of the full document). What MongoDB itself takes
 * to deliver a change, under the same conditions as the tool; `stop()` gives its figures.
 */
function sourceWatcher(streamColl) {
  const sent = new Map() // stamp → sentAt
  const delays = []
  const stream = streamColl.watch([{ $match: { operationType: 'update' } }])
  const reading = (async () => {
    for await (const ev of stream) {
      const stamp = ev.updateDescription?.updatedFields?.stamp
      const at = sent.get(stamp)
      if (at === undefined) continue
      delays.push(performance.now() - at)
      sent.delete(stamp)
    }
  })().catch(() => {})
  return {
    onSend: (u) => sent.set(u.stamp, u.sentAt),
    async stop() {
      await new Promise((r) => setTimeout(r, 1000)) // the last events
      await stream.close().catch(() => {})
      await reading
      const out = requestStats(delays)
      if (out) out.missing = sent.size
      return out
    },
  }
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
      const c0 = await sampleTool(p)
      const m0 = p.mark(`${pass.name}-start`)
      const watcher = sourceWatcher(streamColl)
      const latency = await withTimeout(measureLatency({ ...latencyOpts(config.index, pass), write: mongoWrite, onSend: watcher.onSend }), 240000, `${label} latency`)
      const sourceDelivery = await watcher.stop()
      const m1 = p.mark(`${pass.name}-end`)
      const c1 = await sampleTool(p)
      const cpuSec = m1 && m0 ? m1.cpuSec - m0.cpuSec : null
      const target = flushIntervalMs == null ? null : flushIntervalMs + 50
      out.passes[pass.name] = {
        latency,
        cpuSec: round(cpuSec, 2),
        cpuSecPer100kEvents: per100k(cpuSec, latency.updates),
        targetP99Ms: target,
        p99VsTarget: target && latency.p99Ms !== null ? round(latency.p99Ms / target, 2) : null,
        // The tool's own write requests in this pass, as it timed them: the search server's stalls show here.
        requests: passRequests(c0, c1),
        // MongoDB's own delivery of the same changes to a bare change-stream reader in the harness.
        sourceDelivery,
        stages: stageDiff(c0?.stats?.stages, c1?.stats?.stages),
      }
    }
    const c = await sampleTool(p)
    Object.assign(out, { peakRssMb: round(p.peak.hwmKb / 1024), counters: c?.counters, notes: c?.notes, stages: c?.stats?.stages, adaptiveBatch: c?.stats?.adaptiveBatch })
    return out
  } finally {
    await p.stop().catch(() => {})
    await deleteIndex(run.esUrl, config.index)
  }
}

/** The passes: by default 100/s then the asked-for 500/s; with --rates, one update per write at each rate. */
function streamPasses(opts) {
  if (opts.rates) return opts.rates.map((rate) => ({ name: `${rate}/s`, perBatch: 1, everyMs: 1000 / rate, updates: opts.updates }))
  return [
    { name: '100/s', perBatch: 2, everyMs: 20, updates: Math.max(2, Math.round(opts.updates / 2)) },
    { name: '500/s', perBatch: 10, everyMs: 20, updates: opts.updates },
  ]
}

/** The engine's runs (--engine-variants): label, `batch` options, and the flush interval its p99 target follows. */
function engineRuns(opts) {
  const labels = {
    default: 'engine (flushIntervalMs default 1000)',
    flush100: 'engine (flushIntervalMs 100)',
    'adaptive-off': 'engine (batch.adaptive off)',
    'adaptive-on': 'engine (batch.adaptive on)',
  }
  return opts.engineVariants.map((v) => ({ variant: v, label: labels[v], batch: ENGINE_VARIANTS[v], flushIntervalMs: ENGINE_VARIANTS[v].flushIntervalMs ?? 1000 }))
}

/** Per tool (rounds together) and pass: percentiles over every update of every round. */
function pooled(S) {
  const out = {}
  for (const [name, run] of Object.entries(S.runs)) {
    const tool = name.replace(/ · round \d+$/, '')
    for (const [pass, x] of Object.entries(run?.passes || {})) {
      const l = x.latency
      if (!l) continue
      const p = ((out[tool] ??= {})[pass] ??= { rounds: 0, updates: 0, unseen: 0, samples: [], requests: [] })
      p.rounds++
      p.updates += l.updates
      p.unseen += l.unseen
      p.samples.push(...(l.samplesMs || []))
      if (x.requests) p.requests.push(x.requests)
    }
  }
  for (const passes of Object.values(out)) {
    for (const [pass, p] of Object.entries(passes)) {
      const sorted = p.samples.concat(Array(p.unseen).fill(Infinity)).sort((a, b) => a - b)
      const at = (q) => {
        const v = percentile(sorted, q)
        return Number.isFinite(v) ? v : null
      }
      passes[pass] = { rounds: p.rounds, updates: p.updates, unseen: p.unseen, p50Ms: at(50), p95Ms: at(95), p99Ms: at(99), maxMs: at(100) }
    }
  }
  return out
}

/** results.stream: the passes, then the baseline and each tool's run. */
async function stream(run) {
  const { runId, dbName, step, addonDir } = run
  const opts = run.opts
  const passes = streamPasses(opts)
  const S = { pollMs: opts.pollMs, drainLimitMs: 45000, rounds: opts.streamRounds, passes, runs: {} }
  const streamColl = run.db.collection('stream_docs')
  // One update: a plain `updateOne`, as an application writes; several: one ordered bulk write.
  const update = (u) => ({ $set: { stamp: u.stamp, writtenAt: new Date() } })
  const mongoWrite = (batch) =>
    batch.length === 1
      ? streamColl.updateOne({ _id: new ObjectId(batch[0].id) }, update(batch[0]))
      : streamColl.bulkWrite(
          batch.map((u) => ({ updateOne: { filter: { _id: new ObjectId(u.id) }, update: update(u) } })),
          { ordered: true },
        )
  const latencyOpts = latencyOptions(run, S)
  const tool = (label, script, config, o) => runStream(run, S, { latencyOpts, streamColl, mongoWrite }, label, script, config, o)

  S.runs.baseline = await step('stream: raw _bulk baseline (no sync tool)', () => baseline(run, S, latencyOpts))
  const common = { mode: 'stream', mongoUrl: run.mongoUrl, esUrl: run.esUrl, namespace: `${dbName}.stream_docs` }
  const engine = { ...common, checkpointDb: dbName, addonPath: addonDir }
  // With --stream-rounds N, the tools run in turn N times (the search server's stalls come and go), then pooled.
  for (let k = 1; k <= opts.streamRounds; k++) {
    const suffix = k > 1 ? ` · round ${k}` : ''
    for (const [i, e] of engineRuns(opts).entries()) {
      const n = `${i || ''}${k > 1 ? `r${k}` : ''}`
      S.runs[e.label + suffix] = await step(`stream: ${e.label}${suffix}`, () =>
        tool(e.label.replace(/[()]/g, ''), 'engine.js', { ...engine, index: `bench-${runId}-stream-engine${n}`, name: `bench-${runId}-stream${n}`, batch: e.batch }, { flushIntervalMs: e.flushIntervalMs }),
      )
    }
    S.runs[`node script${suffix}`] = await step(`stream: node script${suffix}`, () => tool('node script', 'node-script.js', { ...common, index: `bench-${runId}-stream-node${k > 1 ? k : ''}` }))
  }
  if (opts.streamRounds > 1) S.pooled = pooled(S)
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
