// The search API over HTTP, on the sync's monitoring server: routes, 400s that reach no search,
// limits, the token, the rate limit, the allow-list and the OpenAPI document.
import { describe, before, test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { serversFor, unique, es, waitFor, startStreaming, freePort } = require('./helpers.js')
const { startFaultProxy } = require('./fault-proxy.js')
const { BIG, requestsSince, searchesSince } = require('./search-helpers.js')
const { Long } = require('mongodb')

const TOKEN = 'search-token-0123456789abcdef'

async function call(base, method, route, body, { token = TOKEN, raw = false } = {}) {
  const headers = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }
  const res = await fetch(base + route, { method, headers, body: body === undefined ? undefined : raw ? body : JSON.stringify(body) })
  const text = await res.text()
  let json = null
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: res.status, headers: res.headers, text, json }
}

/** The status of a search sent from `localAddress` (another client as the server sees it). */
function statusFrom(localAddress, base, index) {
  const body = JSON.stringify({ index })
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}/search`, { method: 'POST', localAddress, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** A streaming sync of one collection (two documents, one Int64 past 2^53) serving search over HTTP. */
async function searchSync(t, ctx, esNode, search) {
  const db = ctx.mongo.db(unique('httpsearch'))
  const index = unique('http-items')
  await db.collection('items').insertMany([
    { _id: 1, name: 'one', big: Long.fromString(String(BIG)), n: 1 },
    { _id: 2, name: 'two', big: Long.fromNumber(2), n: 2 },
    { _id: 3, name: 'three', big: Long.fromNumber(3), n: 3 },
  ])
  const port = await freePort()
  await startStreaming(t, {
    name: unique('http-search'),
    mongo: { uri: ctx.mongoUrl },
    elasticsearch: { node: esNode },
    collections: [{ namespace: `${db.databaseName}.items`, index }],
    http: { port, token: TOKEN },
    search,
  })
  const base = `http://127.0.0.1:${port}`
  await waitFor('the copied documents to be searchable', async () => {
    await es(ctx.esUrl, 'POST', `/${index}/_refresh`)
    return (await call(base, 'POST', '/search', { index })).json?.meta?.total === 3
  })
  return { base, index }
}

describe('search over HTTP', () => {
  const ctx = serversFor('search-http')
  let proxy
  before(async () => {
    proxy = await startFaultProxy(ctx.esUrl)
    ctx.beforeTeardown(() => proxy.close())
  })

  test('routes: search, scroll, indices, fields, health, openapi; Int64 exact in the JSON', { timeout: 300000 }, async (t) => {
    const { base, index } = await searchSync(t, ctx, proxy.url, { maxBodyBytes: 2048 })
    const other = unique('not-managed')
    await es(ctx.esUrl, 'PUT', `/${other}`, {})

    const exact = await call(base, 'POST', '/search', { index, where: { big: String(BIG) }, fields: ['name', 'big'] })
    assert.equal(exact.status, 200, exact.text)
    assert.match(exact.text, /"big":9007199254740993[,}]/, 'every digit in the JSON text')
    assert.deepEqual(exact.json.meta.selectedFields, ['big', 'name'])

    const first = await call(base, 'POST', '/search', { index, sort: ['n'], size: 2 })
    assert.deepEqual(first.json.data.map((d) => d.name), ['one', 'two'])
    assert.equal(first.json.meta.hasNext, true)
    const cursor = encodeURIComponent(first.json.meta.nextCursor)
    const next = await call(base, 'GET', `/search/${index}/scroll?cursor=${cursor}&size=5&fields=name`)
    assert.equal(next.status, 200, next.text)
    assert.deepEqual(next.json.data, [{ _id: '3', name: 'three' }])
    assert.deepEqual({ hasNext: next.json.meta.hasNext, hasPrevious: next.json.meta.hasPrevious }, { hasNext: false, hasPrevious: true })
    const wrongIndex = await call(base, 'GET', `/search/${other}/scroll?cursor=${cursor}`)
    assert.equal(wrongIndex.status, 400)
    assert.match(wrongIndex.json.error, /the cursor is for/)

    const indices = await call(base, 'GET', '/indices')
    assert.deepEqual(indices.json.map((i) => [i.index, i.docsCount]), [[index, 3]], 'only the indices the sync manages')
    const fields = await call(base, 'GET', `/indices/${index}/fields`)
    assert.ok(fields.json.some((f) => f.name === 'big' && f.type === 'long'), fields.text)
    for (const [method, route, body] of [['POST', '/search', { index: other }], ['GET', `/indices/${other}/fields`]]) {
      const refused = await call(base, method, route, body)
      assert.equal(refused.status, 404, `${route}: ${refused.text}`)
      assert.equal(refused.json.code, 'ERR_SEARCH_INPUT')
    }

    assert.equal((await call(base, 'GET', '/health')).status, 200)
    const openapi = await call(base, 'GET', '/openapi.json', undefined, { token: null })
    assert.equal(openapi.json.openapi, '3.0.3')
    assert.deepEqual(Object.keys(openapi.json.paths).sort(), ['/health', '/indices', '/indices/{index}/fields', '/search', '/search/{index}/scroll'])

    for (const route of ['/search', '/indices', '/health']) {
      const res = await call(base, route === '/search' ? 'POST' : 'GET', route, route === '/search' ? { index } : undefined, { token: null })
      assert.equal(res.status, 401, `${route} without the token`)
      assert.ok(!res.text.includes(TOKEN))
    }
  })

  test('malformed requests get a clear 400 and no search reaches the server; bodies are bounded', { timeout: 300000 }, async (t) => {
    const { base, index } = await searchSync(t, ctx, proxy.url, { maxBodyBytes: 2048, maxPageSize: 100 })
    const cases = [
      ['POST', '/search', '{"index":', /the body is not JSON/],
      ['POST', '/search', '[1,2]', /must be an object/],
      ['POST', '/search', JSON.stringify({ index, limit: 5 }), /unknown field `limit`/],
      ['POST', '/search', JSON.stringify({ index, size: 101 }), /size: must be between 1 and 100/],
      ['POST', '/search', JSON.stringify({ index, page: -1 }), /page: invalid value/],
      ['POST', '/search', JSON.stringify({ index, where: { n: { between: [1, 2] } } }), /unknown range key "between"/],
      ['POST', '/search', JSON.stringify({ index, sort: [{ field: 'n', order: 'random' }] }), /order must be "asc" or "desc"/],
      ['POST', '/search', JSON.stringify({ index: '*' }), /not a valid index name/],
      ['POST', '/search', JSON.stringify({ cursor: 'abc.def' }), /cursor is invalid/],
      ['GET', `/search/${index}/scroll`, undefined, /cursor: required/],
      ['GET', `/search/${index}/scroll?cursor=abc.def&size=ten`, undefined, /size: "ten" is not a whole number/],
      ['GET', `/search/${index}/scroll?cursor=abc.def&from=3`, undefined, /unknown query parameter "from"/],
      ['GET', `/indices/_all/fields`, undefined, /must not start with _/],
    ]
    for (const [method, route, body, pattern] of cases) {
      const mark = proxy.counts.requests
      const res = await call(base, method, route, body, { raw: true })
      assert.equal(res.status, 400, `${route} ${body}: ${res.text}`)
      assert.equal(res.json.code, 'ERR_SEARCH_INPUT')
      assert.match(res.json.error, pattern)
      assert.deepEqual(requestsSince(proxy, mark), [], `${route} ${body} reached the search server`)
    }
    const mark = proxy.counts.requests
    const unknown = await call(base, 'POST', '/search', { index, where: { nope: 1 } })
    assert.equal(unknown.status, 400)
    assert.match(unknown.json.error, /where.nope: unknown field "nope"/)
    assert.deepEqual(searchesSince(proxy, mark), [], 'an unknown field sends no search')
    const refused = await call(base, 'POST', '/search', { index, where: { name: { gte: 'a' }, n: { gte: 'yesterday' } } })
    assert.equal(refused.status, 400, refused.text)
    assert.equal(refused.json.code, 'ERR_SEARCH_INPUT', 'n is a long: refused before the server')
    const big = await call(base, 'POST', '/search', { index, where: { name: ['x'.repeat(3000)] } })
    assert.equal(big.status, 413, 'a body over maxBodyBytes')
  })

  test('each client has a token bucket: 429 with Retry-After once it is empty', { timeout: 300000 }, async (t) => {
    const { base, index } = await searchSync(t, ctx, ctx.esUrl, { rateLimit: { perSecond: 0.5, burst: 4 } })
    const statuses = []
    let limited
    for (let i = 0; i < 8; i++) {
      const res = await call(base, 'POST', '/search', { index })
      statuses.push(res.status)
      if (res.status === 429) limited ??= res
    }
    assert.ok(limited, `no 429 in ${statuses}`)
    assert.ok(statuses.filter((s) => s === 200).length <= 5, `at most the burst (and a refill) passes: ${statuses}`)
    assert.equal(await statusFrom('127.0.0.2', base, index), 200, 'another client address has its own bucket')
    assert.ok(Number(limited.headers.get('retry-after')) >= 1, limited.headers.get('retry-after'))
    assert.match(limited.json.error, /too many requests/)
    const retry = Number(limited.headers.get('retry-after'))
    await new Promise((r) => setTimeout(r, retry * 1000 + 200))
    assert.equal((await call(base, 'POST', '/search', { index })).status, 200, 'a token again after Retry-After')
  })
})
