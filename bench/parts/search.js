// Part 6 (--only search), the search API's overhead: the same query through the engine's
// SearchClient (request checks, mapping cache, query building, reply shaping, the napi
// conversion) and as a direct `_search` with the equivalent body, alternated, one at a time;
// p50/p99 of each and their ratio. The index is loaded with `_bulk` (no sync involved).
'use strict'

const path = require('node:path')
const { esRequest } = require('../lib/es')
const { round } = require('../lib/util')

const DOCS = 2000
const ROUNDS = 300
const WARMUP = 20

function quantile(sorted, q) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null
}

async function load(run, index) {
  const create = await esRequest(run.esUrl, 'PUT', `/${index}`, {
    mappings: { properties: { group: { type: 'keyword' }, n: { type: 'long' }, name: { type: 'keyword' }, at: { type: 'date' } } },
  })
  if (create.status !== 200) throw new Error(`cannot create ${index}: ${JSON.stringify(create.body)}`)
  run.indices.add(index)
  for (let i = 0; i < DOCS; i += 500) {
    const lines = []
    for (let k = i; k < Math.min(DOCS, i + 500); k++) {
      lines.push(JSON.stringify({ index: { _index: index, _id: `s${k}` } }))
      lines.push(JSON.stringify({ group: `g${k % 10}`, n: k, name: `name-${k}`, at: new Date(Date.UTC(2024, 0, 1) + k * 60000).toISOString() }))
    }
    const res = await esRequest(run.esUrl, 'POST', '/_bulk?refresh=true', `${lines.join('\n')}\n`, { ndjson: true, timeoutMs: 120000 })
    if (res.status !== 200 || res.body.errors) throw new Error(`bulk into ${index} failed: ${JSON.stringify(res.body).slice(0, 300)}`)
  }
}

/** Times `fn` ROUNDS times (after WARMUP untimed calls), in milliseconds. */
async function timeEach(fns) {
  const times = fns.map(() => [])
  for (let i = 0; i < WARMUP + ROUNDS; i++) {
    for (let f = 0; f < fns.length; f++) {
      const t = performance.now()
      await fns[f]()
      if (i >= WARMUP) times[f].push(performance.now() - t)
    }
  }
  return times.map((list) => list.sort((a, b) => a - b))
}

/** results.search: p50/p99 through the API and direct, and the API's ratio to direct. */
async function search(run) {
  const index = `bench-${run.runId}-search`
  return run.step('search: API vs direct _search', async () => {
    await load(run, index)
    const { SearchClient } = require(path.join(run.addonDir, 'index.js'))
    const client = new SearchClient({ elasticsearch: { node: run.esUrl } })
    const request = { index, where: { group: ['g1', 'g2'], n: { gte: 100, lt: 1900 } }, sort: ['-n'], size: 20, page: 2 }
    const body = {
      query: { bool: { filter: [{ terms: { group: ['g1', 'g2'] } }, { range: { n: { gte: 100, lt: 1900 } } }] } },
      sort: [{ n: { order: 'desc' } }, { _id: 'asc' }],
      from: 20,
      size: 20,
      _source: true,
      track_total_hits: true,
    }
    const api = await client.search(request)
    const direct = await esRequest(run.esUrl, 'POST', `/${index}/_search`, body)
    const same = JSON.stringify(api.data.map((d) => d._id)) === JSON.stringify(direct.body.hits.hits.map((h) => h._id))
    if (!same) throw new Error('the API and the direct search disagree; the comparison would be meaningless')
    const [viaApi, viaDirect] = await timeEach([() => client.search(request), () => esRequest(run.esUrl, 'POST', `/${index}/_search`, body)])
    const stats = (list) => ({ p50Ms: round(quantile(list, 0.5), 2), p99Ms: round(quantile(list, 0.99), 2) })
    const a = stats(viaApi)
    const d = stats(viaDirect)
    return { docs: DOCS, rounds: ROUNDS, api: a, direct: d, ratios: { p50: round(a.p50Ms / d.p50Ms, 3), p99: round(a.p99Ms / d.p99Ms, 3) } }
  })
}

module.exports = { search }
