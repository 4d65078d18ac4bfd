// Stream latency: write updates at a steady rate and time each one until its value is readable
// in the index.
//
// Each update sets `stamp` (a number unique across the run, increasing) and `writtenAt` on a
// random document. A poller reads the `stamp` of every document with an unseen update through
// `_mget` (a realtime read: it sees what Elasticsearch acknowledged, with no refresh needed and
// no refresh forced on the index) every `pollMs`, or less often while many documents are
// pending (every ids/5 ms: a poll of 2,000 ids costs the search server ~35 ms, and polls must not
// eat the capacity the tool under test needs). An update counts as visible once its document
// holds its stamp or a later one. Its latency runs from just before its write was sent to
// MongoDB to the arrival of the `_mget` reply that showed it: never under-reported, and
// over-reported by at most one poll (`pollCycleMs` is the measured time between polls).
'use strict'

const { esRequest } = require('./es')
const { prng } = require('../dataset')

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function percentile(sorted, p) {
  if (!sorted.length) return null
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)
  return sorted[Math.max(0, i)]
}

/**
 * @param {object} o
 * @param {string} o.esUrl
 * @param {string} o.index
 * @param {string[]} o.ids        ES ids of the documents that may be updated
 * @param {(batch: {id: string, stamp: number}[]) => Promise<void>} o.write  sends one batch
 * @param {number} o.stampBase    stamps are stampBase + 1 … stampBase + updates
 * @param {(u: {id: string, stamp: number, sentAt: number}) => void} [o.onSend]  told of each update just before its write
 */
async function measureLatency(o) {
  const { esUrl, index, ids, write, stampBase, log = () => {} } = o
  const updates = o.updates ?? 2000
  const perBatch = o.perBatch ?? 10
  const everyMs = o.everyMs ?? 20
  const pollMs = o.pollMs ?? 20
  const drainMs = o.drainMs ?? 45000
  const writeLimitMs = o.writeLimitMs ?? 60000
  const r = prng(o.seed ?? stampBase)

  const all = [] // in stamp order
  const pendingByDoc = new Map() // id → unseen updates, oldest first
  let oldest = 0 // index into `all` of the oldest possibly unseen update
  let unseen = 0
  let writerDone = false
  let writeError = null

  // Writer: batch b is due at start + b * everyMs; never two writes at once (a slow database
  // shows as a lower achieved rate, not as overlap).
  const writer = (async () => {
    const start = performance.now()
    let stamp = stampBase
    for (let b = 0; b * perBatch < updates; b++) {
      const due = start + b * everyMs
      const wait = due - performance.now()
      if (wait > 0) await sleep(wait)
      if (performance.now() - start > writeLimitMs) throw new Error(`writes took over ${writeLimitMs / 1000} s`)
      const batch = []
      for (let k = 0; k < perBatch && b * perBatch + k < updates; k++) {
        const u = { id: ids[Math.floor(r.float() * ids.length)], stamp: ++stamp, sentAt: performance.now(), seenAt: null }
        batch.push(u)
        all.push(u)
        unseen++
        let q = pendingByDoc.get(u.id)
        if (!q) pendingByDoc.set(u.id, (q = []))
        q.push(u)
      }
      if (o.onSend) for (const u of batch) o.onSend(u)
      await write(batch)
    }
    return performance.now() - start
  })().then(
    (ms) => {
      writerDone = true
      return ms
    },
    (e) => {
      writerDone = true
      writeError = e
      return null
    },
  )

  // Poller.
  let polls = 0
  let pollTotalMs = 0
  let firstPollAt = null
  let lastPollAt = null
  let pollErrors = 0
  let lastPollError = null
  let drainDeadline = null
  for (;;) {
    if (writerDone && drainDeadline === null) drainDeadline = performance.now() + drainMs
    if (writerDone && unseen === 0) break
    if (drainDeadline !== null && performance.now() > drainDeadline) break
    const t = performance.now()
    const wanted = []
    for (const [id, q] of pendingByDoc) if (q.length) wanted.push(id)
    if (wanted.length) {
      firstPollAt ??= t
      lastPollAt = t
      try {
        const res = await esRequest(esUrl, 'POST', `/${index}/_mget?_source_includes=stamp`, { ids: wanted }, { timeoutMs: 10000 })
        const at = performance.now()
        if (res.status === 200) {
          for (const d of res.body.docs) {
            if (!d.found) continue
            const q = pendingByDoc.get(d._id)
            const have = Number(d._source && d._source.stamp)
            while (q && q.length && q[0].stamp <= have) {
              q.shift().seenAt = at
              unseen--
            }
          }
        } else if (res.status !== 404) throw new Error(`_mget: HTTP ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`)
      } catch (e) {
        pollErrors++
        lastPollError = e.message
      }
      polls++
      pollTotalMs += performance.now() - t
    }
    const rest = Math.max(pollMs, wanted.length / 5) - (performance.now() - t)
    if (rest > 0) await sleep(rest)
  }
  const writeMs = await writer

  const lat = all.filter((u) => u.seenAt !== null).map((u) => u.seenAt - u.sentAt).sort((a, b) => a - b)
  // Unseen updates count as infinitely late, so percentiles never look better than they are.
  const withUnseen = lat.concat(Array(all.length - lat.length).fill(Infinity))
  const pct = (p) => {
    const v = percentile(withUnseen, p)
    return v === null ? null : Number.isFinite(v) ? Math.round(v) : null
  }
  const seenPct = (p) => (lat.length ? Math.round(percentile(lat, p)) : null)
  const result = {
    updates: all.length,
    seen: lat.length,
    unseen: all.length - lat.length,
    p50Ms: pct(50),
    p95Ms: pct(95),
    p99Ms: pct(99),
    maxMs: pct(100),
    // Over the visible updates only (differs when some never became visible).
    visibleP50Ms: seenPct(50),
    visibleP99Ms: seenPct(99),
    visibleMaxMs: seenPct(100),
    achievedWritesPerSec: writeMs ? Math.round((all.length / writeMs) * 1000) : null,
    targetWritesPerSec: Math.round((perBatch * 1000) / everyMs),
    // Time between poll starts (the resolution of every figure above) and per `_mget`.
    pollCycleMs: polls > 1 ? Math.round((lastPollAt - firstPollAt) / (polls - 1)) : null,
    pollRequestMs: polls ? Math.round(pollTotalMs / polls) : null,
    pollErrors,
    drainLimitMs: drainMs,
  }
  // Every visible update's latency (ms), so that runs can be pooled (removed before results are saved).
  Object.defineProperty(result, 'samplesMs', { value: lat.map((v) => Math.round(v)), enumerable: false })
  if (lastPollError) result.lastPollError = lastPollError
  if (writeError) result.writeError = writeError.message
  if (result.unseen) log(`    ${result.unseen} of ${result.updates} updates not visible within ${drainMs / 1000} s after the last write`)
  return result
}

/** Waits until any of the documents `ids` in `index` holds `probe: value` (realtime `_mget`). */
async function waitForProbe(esUrl, index, ids, value, timeoutMs) {
  const t0 = performance.now()
  while (performance.now() - t0 < timeoutMs) {
    try {
      const res = await esRequest(esUrl, 'POST', `/${index}/_mget?_source_includes=probe`, { ids }, { timeoutMs: 5000 })
      if (res.status === 200 && res.body.docs.some((d) => d.found && d._source && d._source.probe === value)) return performance.now() - t0
    } catch {
      // not yet
    }
    await sleep(50)
  }
  return null
}

module.exports = { measureLatency, waitForProbe, percentile }
