// The search API through JS (`SearchClient`, `sync.search()`), against the local search server
// behind a recording proxy (to check what reached it).
import { describe, before, after, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { SearchClient, MongoElasticSync } = require('../dist/index.js')
const { serversFor, unique, es, waitFor } = require('./helpers.js')
const { startFaultProxy } = require('./fault-proxy.js')
const { BIG, CITIES, fixtureDocs, bulk, createIndex, requestsSince, searchesSince, rejectsWith, startNoPitProxy } = require('./search-helpers.js')
const { Long } = require('mongodb')

const ids = (page) => page.data.map((d) => d._id)
const expectIds = (docs, keep) => docs.filter(keep).map((d) => d._id)

describe('search: query model', () => {
  const ctx = serversFor('search')
  const docs = fixtureDocs()
  let proxy, client, index

  before(async () => {
    proxy = await startFaultProxy(ctx.esUrl)
    index = unique('people')
    await createIndex(ctx.esUrl, index, docs, { 'index.max_result_window': 200 })
    await bulk(ctx.esUrl, index, [{ _id: 'big', name: 'big', group: 'gx', n: 1000, big: BIG }])
    client = new SearchClient({ elasticsearch: { node: proxy.url }, search: { cursorTtlMs: 1000 } })
  })
  after(() => proxy?.close())

  test('every where form: exact, list, range (numbers and dates), dotted paths, text through its keyword', async () => {
    const all = { size: 100, sort: ['n'] }
    const exact = await client.search({ index, where: { group: 'g1' }, ...all })
    assert.deepEqual(ids(exact), expectIds(docs, (d) => d.group === 'g1'))
    const list = await client.search({ index, where: { 'address.city': ['oslo', 'lima'] }, ...all })
    assert.deepEqual(ids(list), expectIds(docs, (d) => ['oslo', 'lima'].includes(d.address.city)))
    const range = await client.search({ index, where: { n: { gte: 10, lt: 20 }, active: true }, ...all })
    assert.deepEqual(ids(range), expectIds(docs, (d) => d.n >= 10 && d.n < 20 && d.active))
    const dates = await client.search({ index, where: { at: { gt: '2024-01-05T00:00:00.000Z', lte: '2024-01-08T00:00:00.000Z' } }, ...all })
    assert.deepEqual(ids(dates), ['d05', 'd06', 'd07'])
    const text = await client.search({ index, where: { title: 'Title number 7' }, ...all })
    assert.deepEqual(ids(text), ['d07'])
    const float = await client.search({ index, where: { price: { gte: 3, lte: 4.5 } }, ...all })
    assert.deepEqual(ids(float), ['d02', 'd03'])
    assert.equal(range.meta.total, 5)
  })

  test('fields and exclude select the _source; selectedFields says which', async () => {
    const some = await client.search({ index, where: { name: 'name-3' }, fields: ['name', 'address'], exclude: ['address.zip'] })
    assert.deepEqual(some.data, [{ _id: 'd03', name: 'name-3', address: { city: CITIES[3] } }])
    assert.deepEqual(some.meta.selectedFields, ['address.city', 'name'])
    const wild = await client.search({ index, where: { name: 'name-3' }, fields: ['a*'] })
    assert.deepEqual(Object.keys(wild.data[0]).sort(), ['_id', 'active', 'address', 'at'])
    const allBut = await client.search({ index, where: { name: 'name-3' }, exclude: ['title', 'address', 'at'] })
    assert.deepEqual(allBut.data[0], { _id: 'd03', name: 'name-3', group: 'g0', n: 3, price: 4.5, active: false })
  })

  test('sort by several fields with direction; ties keep a stable order', async () => {
    const page = await client.search({ index, where: { n: { lt: 60 } }, sort: ['-group', { field: 'address.city', order: 'asc' }, '-n'], size: 100 })
    const expected = [...docs].sort((a, b) => b.group.localeCompare(a.group) || a.address.city.localeCompare(b.address.city) || b.n - a.n)
    assert.deepEqual(ids(page), expected.map((d) => d._id))
    const tied = await client.search({ index, where: { n: { lt: 60 } }, sort: ['group'], size: 100 })
    const again = await client.search({ index, where: { n: { lt: 60 } }, sort: ['group'], size: 100 })
    assert.deepEqual(ids(tied), ids(again))
  })

  test('offset paging, and its limit at index.max_result_window pointing to cursors', async () => {
    const p2 = await client.search({ index, where: { n: { lt: 60 } }, sort: ['n'], size: 10, page: 2 })
    assert.deepEqual(ids(p2), expectIds(docs, (d) => d.n >= 10 && d.n < 20))
    assert.deepEqual({ ...p2.meta, selectedFields: undefined }, {
      total: 60, pageSize: 10, page: 2, totalPages: 6, hasNext: true, hasPrevious: true, selectedFields: undefined,
    })
    const last = await client.search({ index, where: { n: { lt: 60 } }, sort: ['n'], size: 10, page: 5 })
    assert.equal(last.meta.hasNext, true)
    const mark = proxy.counts.requests
    await rejectsWith(client.search({ index, sort: ['n'], size: 50, page: 5 }), 'ERR_SEARCH_INPUT', /page 5 of 50 reaches result 250, past index.max_result_window \(200\).*cursor/)
    assert.deepEqual(searchesSince(proxy, mark), [], 'the refused page sent no search')
    const edge = await client.search({ index, sort: ['n'], size: 50, page: 4 })
    assert.deepEqual(edge.data, [])
    assert.equal(edge.meta.hasNext, false)
  })

  test('cursor paging reads every document once; a tampered or expired cursor is refused', async () => {
    const seen = []
    let page = await client.search({ index, sort: ['-n'], size: 7 })
    assert.equal(page.meta.hasPrevious, false)
    for (;;) {
      seen.push(...ids(page))
      if (!page.meta.hasNext) break
      assert.equal(typeof page.meta.nextCursor, 'string')
      page = await client.search({ cursor: page.meta.nextCursor })
      assert.equal(page.meta.hasPrevious, true)
    }
    assert.equal(page.meta.nextCursor, undefined)
    assert.deepEqual(seen, ['big', ...[...docs].reverse().map((d) => d._id)])
    // The last page closed the point in time: an earlier cursor cannot read it any more.
    const early = await client.search({ index, sort: ['-n'], size: 30 })
    const second = await client.search({ cursor: early.meta.nextCursor })
    const third = await client.search({ cursor: second.meta.nextCursor })
    assert.equal(third.meta.hasNext, false)
    await rejectsWith(client.search({ cursor: early.meta.nextCursor }), 'ERR_SEARCH_INPUT', /point in time is gone .* start again without a cursor/)

    const first = await client.search({ index, sort: ['n'], size: 5 })
    const cursor = first.meta.nextCursor
    const [payload, tag] = cursor.split('.')
    const state = JSON.parse(Buffer.from(payload, 'base64url'))
    state.index = 'other'
    const forged = `${Buffer.from(JSON.stringify(state)).toString('base64url')}.${tag}`
    const mark = proxy.counts.requests
    await rejectsWith(client.search({ cursor: forged }), 'ERR_SEARCH_INPUT', /cursor is invalid/)
    await rejectsWith(client.search({ cursor: `${payload}.${tag.slice(1)}A` }), 'ERR_SEARCH_INPUT', /cursor is invalid/)
    await rejectsWith(client.search({ cursor: 'not-a-cursor' }), 'ERR_SEARCH_INPUT', /cursor is invalid/)
    assert.deepEqual(requestsSince(proxy, mark), [], 'nothing reached the server')
    // cursorTtlMs is 1000 here.
    await new Promise((r) => setTimeout(r, 1500))
    await rejectsWith(client.search({ cursor }), 'ERR_SEARCH_INPUT', /cursor expired .* start again without a cursor/)
    // Another key (cursorSecret) does not accept this process's cursors.
    const other = new SearchClient({ elasticsearch: { node: proxy.url }, search: { cursorSecret: 'x'.repeat(40) } })
    await rejectsWith(other.search({ cursor: (await client.search({ index, size: 5 })).meta.nextCursor }), 'ERR_SEARCH_INPUT', /cursor is invalid/)
  })

  test('without points in time on the server, cursors page the live index by search_after and _id', async (t) => {
    const noPit = await startNoPitProxy(ctx.esUrl)
    t.after(() => noPit.close())
    const live = new SearchClient({ elasticsearch: { node: noPit.url } })
    const seen = []
    let page = await live.search({ index, where: { n: { lt: 60 } }, sort: ['group'], size: 9 })
    for (;;) {
      seen.push(...ids(page))
      if (!page.meta.hasNext) break
      page = await live.search({ cursor: page.meta.nextCursor })
    }
    await live.search({ index, size: 5 })
    assert.equal(noPit.refused.length, 1, 'asked once, then remembered')
    const byGroup = [...docs].sort((a, b) => a.group.localeCompare(b.group) || a._id.localeCompare(b._id))
    assert.deepEqual(seen, byGroup.map((d) => d._id), 'each once, in sort order, ties by _id')
  })

  test('malformed input of every kind is refused with a clear message, and no search reaches the server', async () => {
    const cases = [
      [{}, /index: required/],
      [{ index }, null],
      [{ index: 'A,b' }, /not a valid index name/],
      [{ index: '_all' }, /must not start with/],
      [{ index, size: 0 }, /size: must be between 1 and 1000/],
      [{ index, size: 5000 }, /size: must be between 1 and 1000/],
      [{ index, page: 0 }, /page: pages are numbered from 1/],
      [{ index, page: 'two' }, /page: invalid type/],
      [{ index, limit: 3 }, /unknown field `limit`/],
      [{ index, where: { n: null } }, /where.n: null is not a value/],
      [{ index, where: { n: [] } }, /a list needs 1 to 1024 values/],
      [{ index, where: { n: { from: 1 } } }, /unknown range key "from"/],
      [{ index, where: { n: { gt: 1, gte: 2 } } }, /give gt or gte/],
      [{ index, where: { n: [{ a: 1 }] } }, /expected a string, number or boolean/],
      [{ index, where: { 'a..b': 1 } }, /not a dotted field path/],
      [{ index, sort: ['n', '-n'] }, /already a sort key/],
      [{ index, sort: [{ field: 'n', order: 'sideways' }] }, /order must be "asc" or "desc"/],
      [{ index, sort: ['n*'] }, /no wildcards here/],
      [{ index, fields: ['a b'] }, /contains whitespace/],
      [{ cursor: 'x.y', where: { n: 1 } }, /where: not allowed with cursor/],
      [{ cursor: 'x'.repeat(20000) }, /cursor: longer than/],
    ]
    for (const [request, pattern] of cases) {
      if (pattern === null) continue
      const mark = proxy.counts.requests
      await rejectsWith(client.search(request), 'ERR_SEARCH_INPUT', pattern)
      assert.deepEqual(requestsSince(proxy, mark), [], `${JSON.stringify(request).slice(0, 80)} reached the server`)
    }
    // Checked against the mapping (read, not searched): unknown fields, wrong types, objects.
    const mapped = [
      [{ index, where: { nope: 1 } }, /where.nope: unknown field "nope"/],
      [{ index, where: { n: 'twelve' } }, /"n" is long; expected a 64-bit integer/],
      [{ index, where: { n: '99999999999999999999' } }, /expected a 64-bit integer/],
      [{ index, where: { active: 'yes' } }, /expected true or false/],
      [{ index, where: { address: 'oslo' } }, /is an object/],
      [{ index, sort: ['missing'] }, /sort\[0\]: unknown field/],
      [{ index, fields: ['nmae'] }, /fields\[0\]: unknown field "nmae"/],
    ]
    for (const [request, pattern] of mapped) {
      const mark = proxy.counts.requests
      await rejectsWith(client.search(request), 'ERR_SEARCH_INPUT', pattern)
      assert.deepEqual(searchesSince(proxy, mark), [], `${JSON.stringify(request)} sent a search`)
    }
    await rejectsWith(client.search({ index: unique('absent') }), 'ERR_SEARCH_INPUT', /is not searchable here/)
    // What only the server can judge (a date it cannot parse) is its refusal: ERR_SEARCH.
    await rejectsWith(client.search({ index, where: { at: { gte: 'yesterday-ish' } } }), 'ERR_SEARCH', /refused the search: .*yesterday-ish/)
    await assert.rejects(client.search(5), (e) => e.code === 'ERR_SEARCH_INPUT')
  })

  test('Int64 past 2^53 is exact: matched as bigint or digits, returned as bigint', async () => {
    for (const value of [BIG, String(BIG), [BIG, 1n]]) {
      const page = await client.search({ index, where: { big: value } })
      assert.deepEqual(ids(page), ['big'], `where big: ${String(value)}`)
      assert.equal(page.data[0].big, BIG)
      assert.equal(typeof page.data[0].big, 'bigint')
    }
    const none = await client.search({ index, where: { big: BIG - 1n } })
    assert.equal(none.meta.total, 0)
  })

  test('indices and fields', async () => {
    const fields = await client.fields(index)
    const byName = Object.fromEntries(fields.map((f) => [f.name, f]))
    assert.deepEqual(byName['address.city'], { name: 'address.city', type: 'keyword', subField: false })
    assert.deepEqual(byName['title.keyword'], { name: 'title.keyword', type: 'keyword', subField: true })
    assert.equal(byName.address.type, 'object')
    const listed = (await client.indices()).find((i) => i.index === index)
    assert.equal(listed.docsCount, 61)
    assert.match(listed.health, /green|yellow/)
    const only = new SearchClient({ elasticsearch: { node: ctx.esUrl }, search: { indices: [index] } })
    assert.deepEqual((await only.indices()).map((i) => i.index), [index])
    await rejectsWith(only.search({ index: `${index}x` }), 'ERR_SEARCH_INPUT', /not searchable here/)
    assert.throws(() => new SearchClient({ elasticsearch: { node: ctx.esUrl }, search: { cursorSecret: 'short' } }), (e) => e.code === 'ERR_CONFIG' && /cursorSecret/.test(e.message))
  })
})

describe('search: cursor paging under writes', () => {
  const ctx = serversFor('search-writes')

  test('5,000 documents paged with a cursor while writes go on: each once, none missing', { timeout: 600000 }, async () => {
    const index = unique('paged')
    const docs = Array.from({ length: 5000 }, (_, i) => ({ _id: `p${i}`, name: `p${i}`, group: `g${i % 5}`, n: i }))
    await createIndex(ctx.esUrl, index, docs)
    const client = new SearchClient({ elasticsearch: { node: ctx.esUrl }, search: { maxPageSize: 500 } })
    let page = await client.search({ index, sort: ['group', '-n'], size: 500 })
    let writing = true
    let written = 0
    // New documents sort anywhere among the old (n is random), and old ones change group.
    const writer = (async () => {
      while (writing) {
        const batch = Array.from({ length: 50 }, (_, k) => ({ _id: `new${written + k}`, name: 'new', group: 'g9', n: Math.floor(Math.random() * 5000) }))
        const updates = Array.from({ length: 20 }, () => {
          const i = Math.floor(Math.random() * 5000)
          return { _id: `p${i}`, name: `p${i}`, group: 'g7', n: i }
        })
        await bulk(ctx.esUrl, index, [...batch, ...updates], 'true')
        written += batch.length
      }
    })()
    const seen = new Map()
    let pages = 0
    try {
      for (;;) {
        pages++
        for (const d of page.data) seen.set(d._id, (seen.get(d._id) ?? 0) + 1)
        if (!page.meta.hasNext) break
        await waitFor('a write between pages', () => written > pages * 10, 120000, 50)
        page = await client.search({ cursor: page.meta.nextCursor })
      }
    } finally {
      writing = false
      await writer
    }
    assert.ok(written > 0)
    const dupes = [...seen].filter(([, c]) => c > 1)
    assert.deepEqual(dupes, [], 'no document twice')
    const missing = docs.filter((d) => !seen.has(d._id)).map((d) => d._id)
    assert.deepEqual(missing, [], 'none of the snapshot missing')
    assert.equal(seen.size, 5000, 'exactly the snapshot (written since: not in it)')
    assert.equal(pages, 10)
  })
})

describe('search: through a sync', () => {
  const ctx = serversFor('search-sync')

  test('sync.search/indices/fields over the indices it manages; Int64 exact from MongoDB to JS', { timeout: 300000 }, async (t) => {
    const db = ctx.mongo.db(unique('searchdb'))
    const index = unique('synced')
    await db.collection('items').insertMany([
      { _id: 1, name: 'one', big: Long.fromString(String(BIG)), tags: ['a'] },
      { _id: 2, name: 'two', big: Long.fromNumber(5), tags: ['b'] },
    ])
    const other = unique('unmanaged')
    await es(ctx.esUrl, 'PUT', `/${other}`, {})
    const sync = new MongoElasticSync({
      name: unique('search-sync'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.items`, index }],
      mode: 'copy',
    })
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    await sync.wait()
    await es(ctx.esUrl, 'POST', `/${index}/_refresh`)
    const page = await sync.search({ index, where: { big: BIG }, fields: ['name', 'big'] })
    assert.deepEqual(page.data, [{ _id: '1', name: 'one', big: BIG }])
    const small = await sync.search({ index, where: { big: 5 } })
    assert.deepEqual(ids(small), ['2'])
    assert.equal(typeof small.data[0].big, 'number')
    assert.deepEqual((await sync.indices()).map((i) => [i.index, i.docsCount]), [[index, 2]])
    assert.ok((await sync.fields(index)).some((f) => f.name === 'big' && f.type === 'long'))
    await rejectsWith(sync.search({ index: other }), 'ERR_SEARCH_INPUT', /not searchable here/)
    await rejectsWith(sync.fields(other), 'ERR_SEARCH_INPUT', /not searchable here/)
  })
})
