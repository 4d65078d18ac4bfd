// One tool's copy in its own process (tools/<script>): figures come from /proc and the tool's
// report. Used by the copy and the overhead parts.
'use strict'

const path = require('node:path')
const { ToolProcess, sample } = require('./proc')
const { log, round, per100k } = require('./util')

const TOOLS = path.resolve(__dirname, '..', 'tools')

/** CPU of the servers (when started here) per 100k documents, between two samples. */
function serverCpu(a, b, docs) {
  return {
    mongoSecPer100k: a.mongo && b.mongo ? per100k(b.mongo.cpuSec - a.mongo.cpuSec, docs) : null,
    esSecPer100k: a.es && b.es ? per100k(b.es.cpuSec - a.es.cpuSec, docs) : null,
  }
}

/** The copy's figures from the tool's report (`msg`, null on a timeout) and the samples. */
function copyFigures(run, p, { msg, marks: [m0, m1], servers: [s0, s1], wallMs, indexed, timeoutNote }) {
  const { N } = run
  const seconds = (msg ? msg.ms : wallMs) / 1000
  const cpuSec = m1 && m0 ? m1.cpuSec - m0.cpuSec : null
  const processed = msg ? msg.docs : null
  const notes = []
  if (timeoutNote) notes.push(`${timeoutNote}; the index held ${indexed} documents`)
  if (msg && indexed !== N) notes.push(`the tool processed ${processed} documents (${round(processed / seconds)}/s) but the index holds ${indexed} of ${N}`)
  return {
    // Throughput is what reached the index: documents there at the end, per second of copy.
    docsPerSec: round((indexed || 0) / seconds),
    seconds: round(seconds, 1),
    processed,
    indexed,
    docs: N,
    cpuSec: round(cpuSec, 2), // from 'go' to 'copied': the copy itself
    cpuSecTotal: round(m1?.cpuSec, 2), // including process start and module loading
    cpuSecPer100k: per100k(cpuSec, processed ?? indexed),
    // Share of the copy spent waiting for `_bulk` replies (tools that report it).
    bulkWaitShare: msg?.counters?.bulkMs != null ? round(msg.counters.bulkMs / msg.ms, 3) : null,
    firstBatchMs: round(msg?.counters?.firstBatchMs), // from start to the first acknowledged batch
    peakRssMb: round(p.peak.hwmKb / 1024),
    startRssMb: round((m0?.rssKb ?? 0) / 1024),
    threads: m1?.threads ?? null,
    serverCpu: serverCpu(s0, s1, processed ?? indexed),
    counters: msg?.counters,
    // The engine's `_bulk` size controller at the end (batch.adaptive on): size, shrinks, grows.
    adaptiveBatch: msg?.stats?.adaptiveBatch,
    notes: msg?.notes,
    ...(timeoutNote ? { error: notes.shift() } : {}),
    ...(notes.length ? { note: notes.join('; ') } : {}),
  }
}

/** Runs `script`'s copy with `config`; `countIndexed()` says how many documents reached the index. */
async function runCopy(run, label, script, config, { countIndexed }) {
  const { copyTimeoutMs } = run
  const pids = run.serverPids
  const sampleServers = () => ({ mongo: pids.mongo ? sample(pids.mongo) : null, es: pids.es ? sample(pids.es) : null })
  run.indices.add(config.index)
  const p = new ToolProcess(path.join(TOOLS, script), config, { label, log })
  try {
    await p.waitFor('loaded', 60000)
    const m0 = p.mark('start')
    const s0 = sampleServers()
    const t0 = performance.now()
    p.send({ type: 'go' })
    let msg = null
    let timeoutNote = null
    try {
      msg = await p.waitFor('copied', copyTimeoutMs)
    } catch (e) {
      if (!/no 'copied' within/.test(e.message)) throw e
      timeoutNote = `timed out after ${Math.round(copyTimeoutMs / 1000)} s`
    }
    const m1 = p.mark('done')
    const s1 = sampleServers()
    const wallMs = performance.now() - t0
    await p.stop()
    const indexed = await countIndexed()
    return copyFigures(run, p, { msg, marks: [m0, m1], servers: [s0, s1], wallMs, indexed, timeoutNote })
  } finally {
    await p.kill()
  }
}

module.exports = { runCopy }
