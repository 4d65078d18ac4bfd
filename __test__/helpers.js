// Shared test plumbing: local servers (or MONGO_URL / ES_URL), clients, and polling helpers.
const { MongoClient } = require('mongodb')
const { startServers } = require('../scripts/local-servers')

/** Starts (or reuses, via MONGO_URL / ES_URL) the servers and opens a MongoDB client. */
async function setup(name) {
  const servers = await startServers({ name })
  const mongo = new MongoClient(servers.mongoUrl)
  await mongo.connect()
  return {
    ...servers,
    servers,
    mongo,
    async teardown() {
      await mongo.close()
      await servers.stop()
    },
  }
}

/** A name unique to this run, so tests against shared real clusters do not collide. */
function unique(prefix) {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}`.toLowerCase()
}

async function es(esUrl, method, path, body) {
  const res = await fetch(esUrl + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

/** Every document of an index, as a Map from `_id` to `_source`. */
async function esDocs(esUrl, index) {
  await es(esUrl, 'POST', `/${index}/_refresh`)
  const res = await es(esUrl, 'POST', `/${index}/_search`, { size: 10000, query: { match_all: {} } })
  if (res.status !== 200) throw new Error(`search of ${index} failed: ${res.status} ${JSON.stringify(res.body)}`)
  return new Map(res.body.hits.hits.map((h) => [h._id, h._source]))
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeoutMs`. */
async function waitFor(what, check, timeoutMs = 30000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      last = await check()
      if (last) return last
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

/** `promise`, or a rejection with `message` after `ms` (the timer never outlives the promise). */
async function withTimeout(promise, ms, message) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Resolves with the first event matching `predicate`. */
function nextEvent(sync, predicate, timeoutMs = 30000) {
  let done = false
  const found = new Promise((resolve) => {
    sync.onEvent((e) => {
      if (!done && predicate(e)) {
        done = true
        resolve(e)
      }
    })
  })
  return withTimeout(found, timeoutMs, 'timed out waiting for an event').finally(() => {
    done = true
  })
}

/**
 * A sync started with `options` and streaming; its events collect in `events`; it is stopped
 * when the test `t` ends, even if the test fails.
 */
async function startStreaming(t, options, timeoutMs = 60000) {
  const { MongoElasticSync } = require('../index.js')
  const sync = new MongoElasticSync(options)
  const events = []
  sync.onEvent((e) => events.push(e))
  const streaming = nextEvent(sync, (e) => e.type === 'state' && e.state === 'streaming', timeoutMs)
  t.after(() => sync.stop().catch(() => {}))
  await sync.start()
  await streaming
  return { sync, events }
}

/** Waits until the index holds exactly the documents of the collection, by `_id` and content. */
async function waitForMirror(ctx, collection, index, toSource = (d) => d, timeoutMs = 60000) {
  let diff
  try {
    return await waitFor(
      `${index} to mirror ${collection.collectionName}`,
      async () => {
        diff = await compare(ctx, collection, index, toSource)
        return diff.missing.length === 0 && diff.extra.length === 0 && diff.stale.length === 0 && diff
      },
      timeoutMs,
      250,
    )
  } catch (e) {
    e.message += ` — missing ${diff?.missing.length} (${diff?.missing.slice(0, 5)}), extra ${diff?.extra.length} (${diff?.extra.slice(0, 5)}), stale ${diff?.stale.length} (${diff?.stale.slice(0, 3).map((s) => JSON.stringify(s))})`
    throw e
  }
}

async function compare(ctx, collection, index, toSource) {
  const indexed = await esDocs(ctx.esUrl, index)
  const missing = []
  const stale = []
  const seen = new Set()
  for await (const doc of collection.find({})) {
    const id = String(doc._id)
    seen.add(id)
    const got = indexed.get(id)
    if (!got) missing.push(id)
    else {
      const { _id, ...rest } = toSource(doc)
      if (JSON.stringify(sortKeys(rest)) !== JSON.stringify(sortKeys(got))) stale.push({ id, want: rest, got })
    }
  }
  const extra = [...indexed.keys()].filter((id) => !seen.has(id))
  return { missing, stale, extra, count: seen.size }
}

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys)
  if (v && typeof v === 'object' && !(v instanceof Date)) {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]))
  }
  return v
}

/** A tiny seeded PRNG (mulberry32) so that failures can be replayed. */
function rng(seed) {
  return () => {
    seed |= 0
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

module.exports = { rng, setup, unique, es, esDocs, waitFor, withTimeout, nextEvent, startStreaming, waitForMirror, compare }
