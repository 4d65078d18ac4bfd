// Renders the results object as Markdown (bench/results/latest.md).
'use strict'

const num = (v, digits = 0) =>
  v === null || v === undefined || Number.isNaN(v)
    ? '—'
    : Number(v).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
const pct = (v) => (v === null || v === undefined ? '—' : `${Math.round(v * 100)}%`)
const ms = (v) => (v === null || v === undefined ? '—' : `${num(v)}`)
const cell = (s) => String(s ?? '—').replace(/\|/g, '\\|').replace(/\n/g, ' ')

const STAGES = ['readAheadWait', 'convert', 'groupCommitWait', 'bulkRequest', 'checkpointSave']

/** Under a pass's table: each tool's own write requests in it (the search server's stalls) and the engine's stages in it. */
function passDetails(s, pass, line) {
  const requests = []
  const stages = []
  for (const [name, run] of Object.entries(s.runs)) {
    const x = run?.passes?.[pass.name]
    if (!x) continue
    const q = name === 'baseline' ? null : x.requests
    if (q) requests.push(`${name} ${num(q.count)} requests, p50 / p95 / p99 / max ${ms(q.p50Ms)} / ${ms(q.p95Ms)} / ${ms(q.p99Ms)} / ${ms(q.maxMs)} ms`)
    if (x.stages) {
      const parts = STAGES.map((st) => x.stages[st] && `${st} ${num(x.stages[st].count)} × avg ${num(x.stages[st].avgMs, 2)} ms`).filter(Boolean)
      stages.push(`${name}: ${parts.join('; ')}`)
    }
  }
  const source = []
  for (const [name, run] of Object.entries(s.runs)) {
    const d = run?.passes?.[pass.name]?.sourceDelivery
    if (d) source.push(`${name} ${ms(d.p50Ms)} / ${ms(d.p95Ms)} / ${ms(d.p99Ms)} / ${ms(d.maxMs)} ms`)
  }
  if (source.length) line(`MongoDB's own delivery of the same updates to a bare change-stream reader in the harness during each tool's pass, write to event, p50 / p95 / p99 / max: ${source.join('; ')}.`)
  if (source.length) line()
  if (requests.length) line(`Each tool's own write requests in this pass, as it timed them (batch to acknowledgement): ${requests.join('; ')}.`)
  if (requests.length) line()
  if (stages.length) line(`The engine's stages in this pass (\`stats().stages\`): ${stages.join(' — ')}.`)
  if (stages.length) line()
}

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
    if (o.sourceCost) {
      const { rounds, mongoCpu: m, firstBatch: f } = o.sourceCost
      const met = (r) => (r === null ? 'not measured' : r <= 1 ? 'met' : 'not met')
      line(
        `What the copy costs the source, medians over ${num(rounds)} rounds (engine and script in the same round, their order turned each round): ` +
          `MongoDB CPU s / 100k engine ${num(m.engine, 2)} vs script ${num(m.script, 2)}, median of the rounds' ratios ×${num(m.ratio, 3)} ` +
          `(each round: ${m.ratios.map((r) => `×${num(r, 2)}`).join(', ')}; target ≤ ×1.0: ${met(m.ratio)}); ` +
          `first batch acknowledged after ms engine ${num(f.engine)} vs script ${num(f.script)}, ×${num(f.ratio, 3)} ` +
          `(each round: ${f.ratios.map((r) => `×${num(r, 2)}`).join(', ')}; target ≤ ×1.0: ${met(f.ratio)}).`,
      )
      line()
      if (m.lessCount !== null || f.lessCount !== null) {
        line(
          `Of that, the engine's one \`estimatedDocumentCount\` before its copy (asked again after each round: MongoDB reads it from metadata, SecantusDB walks every record): ` +
            `MongoDB CPU s / 100k ${num(m.count, 2)}, ${num(f.count)} ms (medians). Without it: MongoDB CPU ×${num(m.lessCount, 3)} ` +
            `(each round: ${m.lessCountRatios.map((r) => `×${num(r, 2)}`).join(', ')}), first batch ×${num(f.lessCount, 3)} ` +
            `(each round: ${f.lessCountRatios.map((r) => `×${num(r, 2)}`).join(', ')}).`,
        )
        line()
      }
    }
    if (o.read) {
      line(
        `Bare driver read (batchSize 1000, best of the rounds): ${num(o.read.docsPerSec)} docs/s; copy into the discarding endpoint ÷ that read: engine ×${num(o.read.engineRatio, 2)}, Node script ×${num(o.read.scriptRatio, 2)} (target for the engine: ≥ ×0.95).`,
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
      passDetails(s, pass, line)
    }
    if (s.pooled) {
      line(`## Stream latency, rounds pooled (each tool but the baseline ran ${num(s.rounds)} times, in turn)`)
      line()
      line('| tool | pass | updates | p50 ms | p95 ms | p99 ms | max ms | never visible |')
      line('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
      for (const [name, passes] of Object.entries(s.pooled)) {
        for (const [pass, p] of Object.entries(passes)) line(`| ${name} | ${pass} | ${num(p.updates)} | ${ms(p.p50Ms)} | ${ms(p.p95Ms)} | ${ms(p.p99Ms)} | ${ms(p.maxMs)} | ${num(p.unseen)} |`)
      }
      line()
    }
    const raw = s.runs.baseline?.bulkRequests
    if (raw) {
      line(
        `The search server's own time per \`_bulk\` request (the harness's baseline, ${num(raw.count)} requests): p50 / p95 / p99 / max ` +
          `${ms(raw.p50Ms)} / ${ms(raw.p95Ms)} / ${ms(raw.p99Ms)} / ${ms(raw.maxMs)} ms; its stalls show here, not as a tool's own latency.`,
      )
      line()
    }
    for (const [name, run] of Object.entries(s.runs)) {
      const stages = run?.stages
      if (!stages) continue
      const cellOf = (stage) => {
        const x = stages[stage]
        return x ? `${stage} ${num(x.count)} × avg ${num(x.count ? x.totalMs / x.count : 0, 2)} ms (max ${num(x.maxMs, 1)})` : null
      }
      const parts = STAGES.map(cellOf).filter(Boolean)
      line(`Where the time of ${name} went (\`stats().stages\`, its whole run): ${parts.join('; ')}.`)
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

  if (r.collections && !r.collections.error && r.collections.runs) {
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

  const k = r.collections?.thousand
  if (k && !k.error) {
    line(`## ${num(k.collections)} collections of one database`)
    line()
    line('| engine | start ms | warm-up ms | MongoDB connections | RSS growth MiB | p50 ms | p95 ms | max ms |')
    line('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    for (const run of k.runs) {
      if (run.error) line(`| ${cell(run.name)} | failed: ${cell(run.error)} | | | | | | |`)
      else line(`| ${cell(run.name)} | ${num(run.startMs)} | ${num(run.warmMs)} | ${num(run.connections)} | ${num(run.rssGrowthMiB)} | ${ms(run.p50Ms)} | ${ms(run.p95Ms)} | ${ms(run.maxMs)} |`)
    }
    line()
    if (k.seedMs != null) line(`Creating the collections (one insert each, by the harness) took ${num(k.seedMs)} ms; warm-up = one insert per collection until all are in the file.`)
    if (k.seedMs != null) line()
    line(
      `Stream mode into the file output. Connections (this process's to MongoDB, the harness's own subtracted) and resident memory growth after a warm-up insert in every ` +
        `collection and 4 idle seconds (idle pooled connections close after 1 s); then ${num(k.probes)} inserts, one every ${num(k.gapMs)} ms in collections spread over all, ` +
        'each timed until its record is in the file.',
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

  if (r.postgres) renderPostgres(r.postgres, line)
  if (r.filtered) renderFiltered(r.filtered, line)

  if (r.errors && r.errors.length) {
    line('## Errors')
    line()
    for (const e of r.errors) line(`- **${e.step}**: ${cell(e.message)}`)
    line()
  }
  return out.join('\n')
}

/** The PostgreSQL part (`--only postgres`): copy docs/s against the `pg` script, stream latency against the baseline. */
function renderPostgres(p, line) {
  line('## PostgreSQL source')
  line()
  line('| copy | docs/s | seconds | indexed |')
  line('| --- | ---: | ---: | ---: |')
  for (const [name, c] of [['engine (`mode: \'copy\'`)', p.copyEngine], ['Node script with `pg`', p.copyNode]]) {
    line(`| ${name} | ${num(c?.docsPerSec)} | ${num(c?.sec, 2)} | ${num(c?.indexed)} |`)
  }
  line(`| ratio engine / script | ${num(p.copyRatio, 2)} | | |`)
  line()
  line('| stream, 100 updates/s | p50 ms | p95 ms | p99 ms | max ms | seen |')
  line('| --- | ---: | ---: | ---: | ---: | ---: |')
  for (const [name, l] of [['engine (logical replication)', p.streamEngine], ['harness: PostgreSQL, then `_bulk`', p.streamBaseline]]) {
    line(`| ${name} | ${ms(l?.p50Ms)} | ${ms(l?.p95Ms)} | ${ms(l?.p99Ms)} | ${ms(l?.maxMs)} | ${num(l?.seen)} / ${num(l?.updates)} |`)
  }
  line()
  line(`${num(p.docs)} rows (~0.8 KB). Each update timed from its write to PostgreSQL until the index shows it.`)
  line()
}

/** The filtered part (`--only filtered`): a filtered collection's stream throughput against an unfiltered one's. */
function renderFiltered(f, line) {
  line('## Filtered collection: stream throughput')
  line()
  line('| engine following | changes/s | seconds | received | engine CPU s / 100k | MongoDB CPU s / 100k |')
  line('| --- | ---: | ---: | ---: | ---: | ---: |')
  for (const [name, x] of Object.entries(f.runs)) {
    line(`| ${name}${x.error ? ` (ERROR: ${x.error})` : ''} | ${num(x.changesPerSec)} | ${num(x.seconds, 2)} | ${num(x.received)} / ${num(x.updates)} | ${num(x.cpuSecPer100k, 2)} | ${num(x.mongoCpuSecPer100k, 2)} |`)
  }
  if (f.ratios) line(`| ratio filtered / unfiltered | ${num(f.ratios.changesPerSec, 3)} | | | ${num(f.ratios.cpuPerChange, 3)} | ${num(f.ratios.mongoCpuPerChange, 3)} |`)
  line()
  line(`${num(f.docs)} documents, ${num(f.updates)} updates: ${f.note}.`)
  line()
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
  if (x.adaptiveBatch) parts.push(`batch.adaptive ended at ${num(x.adaptiveBatch.docs)} docs / ${num(x.adaptiveBatch.bytes)} B after ${x.adaptiveBatch.shrinks} shrinks, ${x.adaptiveBatch.grows} grows`)
  if (x.counters?.retries && x.notes?.length) parts.push(`first retry: ${x.notes[0].slice(0, 160)}`)
  if (x.notes && x.notes.length && (x.counters?.failed || x.counters?.deadLetters || x.counters?.processErrors)) parts.push(`e.g. ${x.notes[0].slice(0, 160)}`)
  return parts.join('; ')
}

module.exports = { render }
