// Renders the results object as Markdown (bench/results/latest.md).
'use strict'

const num = (v, digits = 0) =>
  v === null || v === undefined || Number.isNaN(v)
    ? '—'
    : Number(v).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
const pct = (v) => (v === null || v === undefined ? '—' : `${Math.round(v * 100)}%`)
const ms = (v) => (v === null || v === undefined ? '—' : `${num(v)}`)
const cell = (s) => String(s ?? '—').replace(/\|/g, '\\|').replace(/\n/g, ' ')

function render(r) {
  const out = []
  const line = (s = '') => out.push(s)
  line('# mongo-elastic-sync benchmark')
  line()
  const m = r.machine
  line(`${r.date} · ${m.cpuCount} × ${m.cpuModel} · ${num(m.memoryMb)} MB RAM · Node ${m.node} · ${m.platform}`)
  line()
  line(`Load average (1/5/15 min) at start ${(m.loadAvgAtStart || []).join(' / ')}, at end ${(m.loadAvgAtEnd || []).join(' / ')}: the machine is shared, so compare figures within one run.`)
  line()
  const a = r.addon || {}
  line(`Addon: \`${a.dir}/${a.file}\` (${a.sizeMb} MB, built ${a.builtAt}) — **${a.build}**.`)
  if (a.note) line(`(${a.note}.)`)
  if (a.debugInfo) line('> ⚠ The engine figures below come from a debug build; `npm run bench` builds the release addon first and should be used for decisions.')
  line()
  const d = r.dataset
  line(
    `Dataset: ${num(d.docs)} documents (seed ${d.seed}), average ${num(d.avgBsonBytes)} B as BSON / ${num(d.avgJsonBytes)} B as JSON; ` +
      `${num(d.bigInt64Docs)} with an Int64 above 2^53. Stream tests use the first ${num(d.streamDocs)} documents in their own collection.`,
  )
  line(`Servers: ${r.servers.mongo}; ${r.servers.es}. Total run time ${num(r.durationSec)} s.`)
  line()

  if (r.limits) {
    const L = r.limits
    line('## Raw limits')
    line()
    line('| limit | docs/s | time s | first document after ms | notes |')
    line('| --- | ---: | ---: | ---: | --- |')
    for (const [name, x] of [
      ['driver read, default batches', L.readDefault],
      ['driver read, batchSize 1000', L.read1000],
      ['driver read sorted by `_id`, batchSize 1000', L.readSorted],
      ['`_bulk` load, 1000 docs/request, one at a time', L.load],
      ['`_bulk` load, 1000 docs/request, two in flight', L.load2],
    ]) {
      if (!x) continue
      line(`| ${name} | ${num(x.docsPerSec)} | ${num(x.seconds, 1)} | ${num(x.firstDocMs)} | ${cell(x.error || x.note || '')} |`)
    }
    line()
    line(`min(read, load) = **${num(L.min)} docs/s** (read = best driver read, load = one request at a time).`)
    line()
  }

  if (r.copy) {
    line('## Initial copy (local servers)')
    line()
    line('| tool | docs/s into the index | of min(read, load) | CPU s / 100k docs | peak RSS MB | in index / docs | time in `_bulk` ÷ copy time | MongoDB CPU s / 100k | search server CPU s / 100k | notes |')
    line('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
    for (const [name, x] of Object.entries(r.copy)) {
      if (!x) continue
      if (x.skipped) {
        line(`| ${name} | — | — | — | — | — | — | — | — | ${cell(x.skipped)} |`)
        continue
      }
      line(
        `| ${name} | ${num(x.docsPerSec)} | ${pct(x.ofLimit)} | ${num(x.cpuSecPer100k, 1)} | ${num(x.peakRssMb)} | ${num(x.indexed)} / ${num(x.docs)} | ${pct(x.bulkWaitShare)} | ` +
          `${num(x.serverCpu?.mongoSecPer100k, 1)} | ${num(x.serverCpu?.esSecPer100k, 1)} | ${cell(noteOf(x))} |`,
      )
    }
    line()
  }

  if (r.overhead) {
    const o = r.overhead
    line('## Engine overhead (loopback fake Elasticsearch: accepts and discards)')
    line()
    line('| tool | docs/s | CPU s / 100k docs | peak RSS MB | time in `_bulk` ÷ copy time | most `_bulk` in flight | first batch acknowledged after ms | MongoDB CPU s / 100k | notes |')
    line('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
    for (const [name, x] of Object.entries(o.runs)) {
      if (!x) continue
      line(`| ${name} | ${num(x.docsPerSec)} | ${num(x.cpuSecPer100k, 1)} | ${num(x.peakRssMb)} | ${pct(x.bulkWaitShare)} | ${num(x.maxBulkInFlight)} | ${num(x.firstBatchMs)} | ${num(x.serverCpu?.mongoSecPer100k, 1)} | ${cell(noteOf(x))} |`)
    }
    line()
    if (o.ratios) {
      line(
        `Engine vs Node script: throughput ×${num(o.ratios.docsPerSec, 2)}, CPU per doc ×${num(o.ratios.cpuPerDoc, 2)}, peak RSS ×${num(o.ratios.peakRss, 2)}.`,
      )
      line()
    }
    if (o.transformCost) {
      line(`A JS transform hook (\`setTransform\`, every document into JS and back) vs none: throughput ×${num(o.transformCost.docsPerSec, 2)}, CPU per doc ×${num(o.transformCost.cpuPerDoc, 2)}.`)
      line()
    }
  }

  if (r.stream) {
    const s = r.stream
    for (const pass of s.passes) {
      line(`## Stream latency at ${pass.name} (${num(pass.updates)} updates, ${pass.perBatch} per MongoDB bulk write every ${pass.everyMs} ms)`)
      line()
      line('| tool | p50 ms | p95 ms | p99 ms | max ms | visible | writes/s reached | target p99 ms | p99 / target | CPU s / 100k events | notes |')
      line('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
      for (const [name, run] of Object.entries(s.runs)) {
        if (!run) continue
        if (run.skipped || run.error) {
          line(`| ${name} | — | — | — | — | — | — | — | — | — | ${cell(run.skipped || `ERROR: ${run.error}`)} |`)
          continue
        }
        const x = run.passes?.[pass.name]
        if (!x) continue
        const l = x.latency || {}
        const over = (v) => (v === null && l.unseen ? `> ${num(s.drainLimitMs)}` : ms(v))
        const notes = []
        if (l.unseen) notes.push(`${num(l.unseen)} never visible; visible ones p50 ${ms(l.visibleP50Ms)} / p99 ${ms(l.visibleP99Ms)} ms`)
        if (l.writeError) notes.push(`writes: ${l.writeError}`)
        if (l.pollErrors) notes.push(`${l.pollErrors} poll errors`)
        if (run.note && pass === s.passes[0]) notes.push(run.note)
        const tool = noteOf({ counters: run.counters, notes: run.notes })
        if (tool && pass === s.passes[0]) notes.push(tool)
        line(
          `| ${name} | ${over(l.p50Ms)} | ${over(l.p95Ms)} | ${over(l.p99Ms)} | ${over(l.maxMs)} | ${num(l.seen)} / ${num(l.updates)} | ${num(l.achievedWritesPerSec)} | ` +
            `${ms(x.targetP99Ms)} | ${x.p99VsTarget == null ? '—' : `×${num(x.p99VsTarget, 2)}`} | ${num(x.cpuSecPer100kEvents, 1)} | ${cell(notes.join('; '))} |`,
        )
      }
      line()
    }
    const cycles = Object.values(s.runs).flatMap((run) => Object.values(run?.passes || {}).map((x) => x.latency?.pollCycleMs)).filter((v) => v != null)
    line(
      `Latency = from just before the MongoDB write (the baseline: the \`_bulk\` request) to the reply of the \`_mget\` poll that showed the new value ` +
        `(realtime read of what Elasticsearch acknowledged; polled every ${s.pollMs} ms, measured cycles ${cycles.length ? `${Math.min(...cycles)}–${Math.max(...cycles)}` : '—'} ms: ` +
        `the search server answers a poll only between bulk requests). Updates not visible ${num(s.drainLimitMs / 1000)} s after the last write count as infinitely late. ` +
        `Target p99 = the engine's flush interval + 50 ms.`,
    )
    line()
  }

  if (r.collections && !r.collections.error) {
    const c = r.collections
    line(`## One change among ${num(c.collections)} followed collections`)
    line()
    line('| engine | p50 ms | p95 ms | max ms |')
    line('| --- | ---: | ---: | ---: |')
    for (const run of c.runs) line(`| ${cell(run.name)} | ${ms(run.p50Ms)} | ${ms(run.p95Ms)} | ${ms(run.maxMs)} |`)
    line()
    line(
      `After one untimed insert per collection (warm-up), ${num(c.probes)} inserts, one at a time every ${num(c.gapMs)} ms, spread over the collections; each timed from just before the insert ` +
        'to its record in the file output (no Elasticsearch in the path). Every followed collection keeps a change-stream read waiting on a connection of its own.',
    )
    line()
  }

  if (r.search && !r.search.error && r.search.api) {
    const s = r.search
    line('## Search API overhead')
    line()
    line('| path | p50 ms | p99 ms |')
    line('| --- | ---: | ---: |')
    line(`| SearchClient.search() | ${num(s.api.p50Ms, 2)} | ${num(s.api.p99Ms, 2)} |`)
    line(`| direct \`_search\` (same query) | ${num(s.direct.p50Ms, 2)} | ${num(s.direct.p99Ms, 2)} |`)
    line(`| ratio API / direct | ${num(s.ratios.p50, 3)} | ${num(s.ratios.p99, 3)} |`)
    line()
    line(
      `${num(s.rounds)} searches each, alternated, one at a time, over ${num(s.docs)} documents: a list and a range in \`where\`, a descending sort, page 2 of 20. ` +
        'Both include the search server; the difference is the API: checks, the cached mapping, building the query, shaping the reply and the napi conversion.',
    )
    line()
  }

  if (r.errors && r.errors.length) {
    line('## Errors')
    line()
    for (const e of r.errors) line(`- **${e.step}**: ${cell(e.message)}`)
    line()
  }
  return out.join('\n')
}

function noteOf(x) {
  const parts = []
  if (x.error) parts.push(`ERROR: ${x.error}`)
  if (x.note) parts.push(x.note)
  if (x.counters) {
    const c = x.counters
    if (c.failed) parts.push(`${c.failed} items failed`)
    if (c.deadLetters) parts.push(`${c.deadLetters} dead letters`)
    if (c.retries) parts.push(`${c.retries} retries`)
    if (c.processErrors) parts.push(`${c.processErrors} process errors`)
  }
  if (x.notes && x.notes.length && (x.counters?.failed || x.counters?.deadLetters || x.counters?.processErrors)) parts.push(`e.g. ${x.notes[0].slice(0, 160)}`)
  return parts.join('; ')
}

module.exports = { render }
