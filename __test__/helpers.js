// Shared test plumbing: local servers (or MONGO_URL / ES_URL), clients, and polling helpers.
const { before, after } = require('node:test')
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const path = require('node:path')
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

/** A port nothing listens on right now. */
async function freePort() {
  const net = require('node:net')
  const server = net.createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
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

/**
 * Every document of an index, as a Map from `_id` to `_source`: read with a scroll, page by
 * page, so that an index of more than one page (10,000 hits, the servers' default result
 * window) is read whole, never silently cut; a total that disagrees with what was read fails.
 */
async function esDocs(esUrl, index) {
  await es(esUrl, 'POST', `/${index}/_refresh`)
  const docs = new Map()
  let res = await es(esUrl, 'POST', `/${index}/_search?scroll=1m`, { size: 5000, track_total_hits: true, query: { match_all: {} } })
  let scrollId
  try {
    for (;;) {
      if (res.status !== 200) throw new Error(`search of ${index} failed: ${res.status} ${JSON.stringify(res.body)}`)
      scrollId = res.body._scroll_id ?? scrollId
      const hits = res.body.hits.hits
      for (const h of hits) docs.set(h._id, h._source)
      const total = res.body.hits.total?.value ?? res.body.hits.total
      if (hits.length === 0 || docs.size >= total) {
        if (typeof total === 'number' && docs.size !== total) throw new Error(`search of ${index}: ${docs.size} documents read, the server counted ${total}`)
        return docs
      }
      res = await es(esUrl, 'POST', '/_search/scroll', { scroll: '1m', scroll_id: scrollId })
    }
  } finally {
    if (scrollId) await es(esUrl, 'DELETE', '/_search/scroll', { scroll_id: scrollId }).catch(() => {})
  }
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

/**
 * Differences between the collection and `docs` (a Map from `_id` to document without `_id`), as
 * lists of ids: `missing` from `docs`, `extra` in `docs`, `stale` (a different content); `same`
 * when there is none. `toSource` shapes a MongoDB document as `docs` should hold it.
 */
async function diffDocs(collection, docs, toSource = (d) => d) {
  const missing = []
  const stale = []
  const seen = new Set()
  for await (const doc of collection.find({})) {
    const id = String(doc._id)
    seen.add(id)
    if (!docs.has(id)) missing.push(id)
    else {
      const { _id, ...want } = toSource(doc)
      const got = docs.get(id)
      if (JSON.stringify(sortKeys(want)) !== JSON.stringify(sortKeys(got))) stale.push({ id, want, got })
    }
  }
  const extra = [...docs.keys()].filter((id) => !seen.has(id))
  return { missing, stale, extra, count: seen.size, same: missing.length === 0 && stale.length === 0 && extra.length === 0 }
}

/** A diff of `diffDocs` in a line, for failure messages. */
function describeDiff(d) {
  if (!d) return 'no comparison made'
  const stale = d.stale.slice(0, 3).map((s) => JSON.stringify(s))
  return `missing ${d.missing.length} (${d.missing.slice(0, 5)}), extra ${d.extra.length} (${d.extra.slice(0, 5)}), stale ${d.stale.length} (${stale})`
}

/**
 * Polls `read()` (→ `{ docs, value }`, or null while there is nothing to compare) until `docs`
 * equal the collection (see `diffDocs`); resolves with `{ diff, value }` of that read.
 */
async function waitForSame(what, collection, read, { toSource, timeoutMs = 60000 } = {}) {
  let diff
  try {
    return await waitFor(
      what,
      async () => {
        const got = await read()
        if (!got) return false
        diff = await diffDocs(collection, got.docs, toSource)
        return diff.same && { diff, value: got.value }
      },
      timeoutMs,
      250,
    )
  } catch (e) {
    e.message += ` — ${describeDiff(diff)}`
    throw e
  }
}

/** Waits until the index holds exactly the documents of the collection, by `_id` and content. */
async function waitForMirror(ctx, collection, index, toSource = (d) => d, timeoutMs = 60000) {
  const read = async () => ({ docs: await esDocs(ctx.esUrl, index) })
  const { diff } = await waitForSame(`${index} to mirror ${collection.collectionName}`, collection, read, { toSource, timeoutMs })
  return diff
}

/** The differences between the collection and the index (see `diffDocs`). */
async function compare(ctx, collection, index, toSource) {
  return diffDocs(collection, await esDocs(ctx.esUrl, index), toSource)
}

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys)
  if (v && typeof v === 'object' && !(v instanceof Date)) {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]))
  }
  return v
}

/**
 * Calls `onLine` for every complete line of a readable stream; returns a function that gives what
 * arrived after the last line break so far.
 */
function eachLine(stream, onLine) {
  let buffer = ''
  stream.setEncoding('utf8')
  stream.on('data', (chunk) => {
    buffer += chunk
    let nl
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl)
      buffer = buffer.slice(nl + 1)
      onLine(line)
    }
  })
  return () => buffer
}

/** Calls `fn` with each JSON line a readable stream carries. */
function onJsonLines(stream, fn) {
  eachLine(stream, (line) => line.trim() && fn(JSON.parse(line)))
}

/**
 * The sync in a child process (`fixtures/run-sync.js`, which it can be killed out of); `events`
 * fills with its events as they arrive, `exited` resolves with its exit.
 */
function runChild(options, mode = 'run', env = process.env) {
  const fixture = path.join(__dirname, 'fixtures', 'run-sync.js')
  const child = spawn(process.execPath, [fixture, JSON.stringify(options), mode], { stdio: ['ignore', 'pipe', 'inherit'], env })
  const events = []
  onJsonLines(child.stdout, (event) => events.push(event))
  return { child, events, exited: once(child, 'exit') }
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

/**
 * The servers of a `describe` block: started before its first test and stopped after its last,
 * so each test has its own setup and clean-up and a failing one leaves the next ones a working
 * server. Returns the object `setup` fills in once the block starts; `beforeTeardown(fn)` runs
 * `fn` after the block's last test but while the servers still run (last registered first).
 */
function serversFor(name) {
  const cleanups = []
  const ctx = { beforeTeardown: (fn) => cleanups.push(fn) }
  before(async () => Object.assign(ctx, await setup(name)))
  after(async () => {
    try {
      for (const fn of cleanups.reverse()) await fn()
    } finally {
      await ctx.teardown?.()
    }
  })
  return ctx
}

/** Runs the CLI (`scripts/cli.js`) to its exit, `input` on its stdin: its exit code and output. */
async function runCli(t, args, { input = '', env = process.env, timeoutMs = 90000 } = {}) {
  const { spawn } = require('node:child_process')
  const { once } = require('node:events')
  const child = spawn(process.execPath, [require('node:path').join(__dirname, '..', 'scripts', 'cli.js'), ...args], { stdio: ['pipe', 'pipe', 'pipe'], env })
  t.after(() => child.kill('SIGKILL'))
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (err += d))
  child.stdin.end(input)
  const [code] = await withTimeout(once(child, 'exit'), timeoutMs, `mongo-elastic-sync ${args.join(' ')} did not exit`)
  return { code, out, err }
}

/**
 * A new service key for test `t`: its private key in MES_PRIVATE_KEY until the test ends, and
 * `seal(value)` sealing a secret for it.
 */
function serviceKey(t) {
  const { generateKeyPair, sealSecret } = require('..')
  const key = generateKeyPair()
  process.env.MES_PRIVATE_KEY = key.privateKey
  t.after(() => delete process.env.MES_PRIVATE_KEY)
  return { key, seal: (value) => sealSecret(key.publicKey, value) }
}

module.exports = {
  serviceKey,
  freePort,
  runCli,
  rng,
  runChild,
  onJsonLines,
  eachLine,
  setup,
  serversFor,
  unique,
  es,
  esDocs,
  waitFor,
  withTimeout,
  nextEvent,
  startStreaming,
  waitForMirror,
  waitForSame,
  compare,
  diffDocs,
  describeDiff,
  sortKeys,
}
