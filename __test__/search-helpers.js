// Shared plumbing of the search tests: a fixed index with a known mapping and documents, bulk
// loading, and checks on what reached the search server (through the recording fault proxy).
const assert = require('node:assert/strict')
const { es } = require('./helpers.js')

const MAPPING = {
  properties: {
    name: { type: 'keyword' },
    group: { type: 'keyword' },
    n: { type: 'long' },
    price: { type: 'double' },
    at: { type: 'date' },
    active: { type: 'boolean' },
    title: { type: 'text', fields: { keyword: { type: 'keyword', ignore_above: 256 } } },
    address: { properties: { city: { type: 'keyword' }, zip: { type: 'keyword' } } },
    big: { type: 'long' },
  },
}

const CITIES = ['oslo', 'rome', 'lima', 'kyiv']
const BIG = 9007199254740993n // 2^53 + 1: not a double

/** The documents of the fixed index, by `_id` (`d00` … `d59`). */
function fixtureDocs(count = 60) {
  const docs = []
  for (let i = 0; i < count; i++) {
    docs.push({
      _id: `d${String(i).padStart(2, '0')}`,
      name: `name-${i}`,
      group: `g${i % 3}`,
      n: i,
      price: i * 1.5,
      at: new Date(Date.UTC(2024, 0, 1 + i)).toISOString(),
      active: i % 2 === 0,
      title: `Title number ${i}`,
      address: { city: CITIES[i % 4], zip: `z${i}` },
    })
  }
  return docs
}

/** `_bulk` NDJSON for `docs` (each with its `_id`); `big` values as exact JSON digits. */
function bulkBody(index, docs) {
  return docs
    .map(({ _id, ...source }) => `${JSON.stringify({ index: { _index: index, _id } })}\n${JSON.stringify(source, (k, v) => (typeof v === 'bigint' ? `@@${v}@@` : v)).replace(/"@@(-?\d+)@@"/g, '$1')}\n`)
    .join('')
}

async function bulk(esUrl, index, docs, refresh = 'true') {
  for (let i = 0; i < docs.length; i += 1000) {
    const res = await fetch(`${esUrl}/_bulk?refresh=${refresh}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: bulkBody(index, docs.slice(i, i + 1000)),
    })
    const body = await res.json()
    assert.equal(res.status, 200, JSON.stringify(body).slice(0, 500))
    assert.equal(body.errors, false, JSON.stringify(body.items.find((it) => Object.values(it)[0].error)))
  }
}

/** Creates `index` with the fixed mapping (and `settings`) and loads `docs` into it. */
async function createIndex(esUrl, index, docs, settings = {}) {
  const res = await es(esUrl, 'PUT', `/${index}`, { settings, mappings: MAPPING })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  await bulk(esUrl, index, docs)
}

/** Requests that reached the search server since `mark` (`proxy.counts.requests` then). */
function requestsSince(proxy, mark) {
  const count = proxy.counts.requests - mark
  return count === 0 ? [] : proxy.seen.slice(-count)
}

/** Searches (and points in time) that reached the search server since `mark`. */
function searchesSince(proxy, mark) {
  return requestsSince(proxy, mark).filter((r) => /_search|_pit|point_in_time/.test(r.url))
}

/** `promise` rejects with `code`, and a message matching `pattern`. */
async function rejectsWith(promise, code, pattern) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.code, code, `code of: ${e.message}`)
    assert.match(e.message, pattern)
    return true
  })
}

/**
 * A proxy in front of `esUrl` that answers opening a point in time as a server without them
 * does (404 "no handler found"), and forwards everything else.
 */
async function startNoPitProxy(esUrl) {
  const http = require('node:http')
  const target = new URL(esUrl)
  const refused = []
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      if (/_pit|point_in_time/.test(req.url)) {
        refused.push(req.url)
        res.writeHead(404, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ error: `no handler found for uri [${req.url}] and method [${req.method}]` }))
        return
      }
      const body = Buffer.concat(chunks)
      const headers = { ...req.headers, host: target.host, 'content-length': body.length }
      const forward = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (reply) => {
        res.writeHead(reply.statusCode, reply.headers)
        reply.pipe(res)
      })
      forward.on('error', (e) => {
        res.writeHead(502)
        res.end(String(e))
      })
      forward.end(body)
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    refused,
    close: () => new Promise((resolve) => {
      server.closeAllConnections()
      server.close(resolve)
    }),
  }
}

module.exports = { MAPPING, CITIES, BIG, fixtureDocs, bulk, bulkBody, createIndex, requestsSince, searchesSince, startNoPitProxy, rejectsWith }
