// Outputs besides Elasticsearch: change records (one JSON object a line) to a rotating file, to
// stdout, to a TCP receiver (Logstash json_lines) and to NATS JetStream; several outputs at once
// (fan-out); and the options' errors. Records are checked against a change stream the test opens
// itself (the ground truth: operation, id and version of every change) and by replaying them as
// Elasticsearch would (external_gte versions) into the collection's final state.
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { rng, setup, unique, waitFor, withTimeout, startStreaming, waitForMirror, esDocs } = require('./helpers.js')
const { ObjectId } = require('mongodb')

const HERE = path.dirname(new URL(import.meta.url).pathname)
const RUN_SYNC = path.join(HERE, 'fixtures', 'run-sync.js')
const RUN_STDOUT = path.join(HERE, 'fixtures', 'run-stdout.js')
const NATS_URL = process.env.NATS_URL || 'nats://127.0.0.1:4222'

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// ---------------------------------------------------------------------------------------------
// Records

/**
 * One record line as an object. The version is a 63-bit integer (past 2^53, so JSON.parse would
 * round it): the top-level "version" is read exactly, as a BigInt. Test documents have no field
 * named "version", so the rewrite cannot touch their content.
 */
function parseRecord(line) {
  let record
  try {
    record = JSON.parse(line.replace(/"version":(-?\d+)/g, '"version":"$1"'))
  } catch (e) {
    throw new Error(`not a JSON line: ${JSON.stringify(line.slice(0, 300))} (${e.message})`)
  }
  if (record === null || typeof record !== 'object' || Array.isArray(record)) throw new Error(`not a JSON object: ${line.slice(0, 300)}`)
  if (record.version !== undefined) {
    if (!/^\d+$/.test(String(record.version))) throw new Error(`version is not a non-negative integer: ${line.slice(0, 300)}`)
    record.version = BigInt(record.version)
  }
  return record
}

/** The documented external version of a change: (seconds << 31) | increment of its cluster time. */
const versionOf = (ts) => (BigInt(ts.t) << 31n) | BigInt(ts.i)

/** Identity of a document change: what a replay repeats and what two changes never share. */
const changeKey = (r) => `${r.operation} ${r.id} ${r.version}`

const brief = (r) => ({ operation: r.operation, id: r.id, version: r.version })

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys)
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]))
  return v
}
const canon = (v) => JSON.stringify(sortKeys(v))
const withoutId = ({ _id, ...rest }) => rest

/**
 * What a consumer ends with when it applies the records of `index` as Elasticsearch does with
 * `version_type: external_gte` (an older version never overwrites a newer one; deletes are
 * versioned too): a Map from id to document.
 */
function replay(records, index) {
  const state = new Map()
  for (const r of records) {
    if (r.index !== index) continue
    if (r.operation === 'deleteDocuments' || r.operation === 'deleteIndex') {
      state.clear()
      continue
    }
    if (r.action !== 'index' && r.action !== 'delete') continue
    const prev = state.get(r.id)
    if (prev && prev.version > r.version) continue
    state.set(r.id, { version: r.version, document: r.action === 'index' ? r.document : undefined })
  }
  return new Map([...state].filter(([, v]) => v.document !== undefined).map(([id, v]) => [id, v.document]))
}

/** Differences between the collection and `docs` (id → document without `_id`). */
async function diffState(coll, docs) {
  const missing = []
  const stale = []
  const seen = new Set()
  for await (const doc of coll.find({})) {
    const id = String(doc._id)
    seen.add(id)
    if (!docs.has(id)) missing.push(id)
    else if (canon(withoutId(doc)) !== canon(docs.get(id))) stale.push({ id, want: withoutId(doc), got: docs.get(id) })
  }
  const extra = [...docs.keys()].filter((id) => !seen.has(id))
  return { missing, stale, extra, count: seen.size, same: missing.length === 0 && stale.length === 0 && extra.length === 0 }
}

const describeDiff = (d) =>
  d ? `missing ${d.missing.length} (${d.missing.slice(0, 5)}), extra ${d.extra.length} (${d.extra.slice(0, 5)}), stale ${d.stale.length} (${d.stale.slice(0, 2).map((s) => JSON.stringify(s))})` : 'no comparison made'

/** Polls `read()` (→ records) until their replay equals the collection; returns the records. */
async function waitForReplay(what, read, coll, index, timeoutMs = 60000) {
  let diff
  try {
    return await waitFor(
      what,
      async () => {
        const records = await read()
        if (!records) return false
        diff = await diffState(coll, replay(records, index))
        return diff.same && records
      },
      timeoutMs,
      250,
    )
  } catch (e) {
    e.message += ` — ${describeDiff(diff)}`
    throw e
  }
}

/**
 * The ground truth: every document change of `coll` from now on, as { operation, id, version },
 * in change order. Resolves once the change stream is open.
 */
async function watchChanges(t, coll) {
  const changes = []
  const stream = coll.watch([])
  stream.on('change', (c) => {
    if (['insert', 'update', 'replace', 'delete'].includes(c.operationType)) {
      changes.push({ operation: c.operationType, id: String(c.documentKey._id), version: versionOf(c.clusterTime) })
    }
  })
  stream.on('error', (e) => changes.push({ error: e.message }))
  t.after(() => stream.close().catch(() => {}))
  // The first resume token arrives with the reply to the aggregate: the stream is open.
  await withTimeout(once(stream, 'resumeTokenChanged'), 30000, 'the test change stream did not open')
  return changes
}

/** A small plain document (no field named "version", see parseRecord). */
function makeDoc(id, pad = 0) {
  const n = Number(id)
  return { _id: id, n, s: `doc ${id}`, tags: ['a', `t${n % 5}`], nested: { even: n % 2 === 0 }, ...(pad ? { pad: 'x'.repeat(pad) } : {}) }
}

/**
 * Writes bulks of changes until stopped: inserts of new ids, updates and replaces of `updatable`
 * ids (and of the ids it inserted), deletes of `deletable` ids, each once. A deleted id is never
 * updated: an update looked up after its document was deleted is skipped by design (the delete
 * follows), and these tests expect every change of the ground truth as a record. Every operation
 * changes its document, so `ops` is also the number of change events it caused.
 */
function startWriter(coll, { seed, updatable, deletable, nextId, perBulk = 10, pauseMs = 50, pad = 0 }) {
  const random = rng(seed)
  updatable = [...updatable]
  deletable = [...deletable]
  let writing = true
  let bulks = 0
  let ops = 0
  const pick = () => updatable[Math.floor(random() * updatable.length)]
  const done = (async () => {
    while (writing) {
      const bulk = []
      for (let k = 0; k < perBulk; k++) {
        const r = random()
        if (r < 0.45) bulk.push({ updateOne: { filter: { _id: pick() }, update: { $inc: { n: 1 }, $set: { s: `bulk ${bulks}` } } } })
        else if (r < 0.55) bulk.push({ replaceOne: { filter: { _id: pick() }, replacement: { n: -1, s: `replaced by op ${ops + k}` } } })
        else if (r < 0.7 && deletable.length) bulk.push({ deleteOne: { filter: { _id: deletable.pop() } } })
        else {
          const id = nextId++
          bulk.push({ insertOne: { document: makeDoc(id, pad) } })
          updatable.push(id)
        }
      }
      await coll.bulkWrite(bulk, { ordered: true })
      ops += bulk.length
      bulks++
      await sleep(pauseMs)
    }
  })()
  return {
    get ops() {
      return ops
    },
    /** Stops writing; resolves with the number of operations (= change events) written. */
    async stop() {
      writing = false
      await done
      return ops
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Files

function tempDir(t, prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `mes-${prefix}-`))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The rotated files of a file output (`<path>.<n>`), by n ascending (oldest first). */
function rotatedFiles(file) {
  const base = path.basename(file)
  const out = []
  for (const name of fs.readdirSync(path.dirname(file))) {
    const suffix = name.startsWith(`${base}.`) ? name.slice(base.length + 1) : null
    if (suffix !== null && /^\d+$/.test(suffix)) out.push({ n: Number(suffix), file: path.join(path.dirname(file), name) })
  }
  return out.sort((a, b) => a.n - b.n)
}

/**
 * Every line of a file output, oldest first: the rotated files by n ascending, then the active
 * file. `unterminated` holds what follows a file's last line break (a torn or unfinished line).
 */
function readOutputFiles(file) {
  const files = rotatedFiles(file).map((r) => r.file)
  if (fs.existsSync(file)) files.push(file)
  const lines = []
  const unterminated = []
  for (const f of files) {
    const parts = fs.readFileSync(f, 'utf8').split('\n')
    const last = parts.pop()
    if (last !== '') unterminated.push({ file: path.basename(f), text: last.slice(0, 200) })
    lines.push(...parts)
  }
  return { files, lines, unterminated }
}

/** Complete lines of the output so far, as records (null while a rotation is half seen). */
function readRecordsNow(file) {
  try {
    return readOutputFiles(file).lines.map(parseRecord)
  } catch (e) {
    if (e.code === 'ENOENT') return null
    throw e
  }
}

/**
 * Follows a file output as a log shipper does: reads the active file as it grows, only complete
 * lines; when the active file is renamed away (rotated to `<path>.<n>`), reads it to its end,
 * then goes on with the next rotated file or the new active file. Every file is followed by its
 * open descriptor (inode), never by reading a name twice.
 */
class Tailer {
  constructor(file) {
    this.file = file
    this.fd = null
    this.ino = null
    this.offset = 0
    this.rotatedN = null // n of the rotated file being read, null when it is the active file
    this.lastN = 0 // the newest rotated file read to its end
    this.rest = '' // an unfinished last line
    this.lines = []
    this.torn = [] // lines a rotated file ended without a line break
    this.error = null
  }

  poll() {
    if (this.error) return
    try {
      this.#poll()
    } catch (e) {
      this.error = e
    }
  }

  #poll() {
    for (;;) {
      if (this.fd === null && !this.#openNext()) return
      if (this.rotatedN !== null) {
        // A rotated file is never written again: read it to its end and move on.
        this.#drain()
        this.#finishFile()
        continue
      }
      const active = statIno(this.file)
      this.#drain()
      if (active === this.ino) return
      // The active file was rotated: it must now be the next rotated file.
      const n = this.lastN + 1
      const renamed = statIno(`${this.file}.${n}`)
      if (renamed !== this.ino) throw new Error(`the active file was rotated but ${this.file}.${n} is not it (inode ${renamed}, expected ${this.ino})`)
      this.rotatedN = n
    }
  }

  #openNext() {
    const n = this.lastN + 1
    const rotated = openIfExists(`${this.file}.${n}`)
    if (rotated !== null) {
      this.#use(rotated, n)
      return true
    }
    const active = openIfExists(this.file)
    if (active === null) return false
    if (fs.existsSync(`${this.file}.${n}`)) {
      // Rotated between the two looks: the older file comes first.
      fs.closeSync(active)
      return this.#openNext()
    }
    this.#use(active, null)
    return true
  }

  #use(fd, rotatedN) {
    this.fd = fd
    this.ino = fs.fstatSync(fd).ino
    this.offset = 0
    this.rotatedN = rotatedN
  }

  #drain() {
    const buf = Buffer.alloc(64 * 1024)
    for (;;) {
      const n = fs.readSync(this.fd, buf, 0, buf.length, this.offset)
      if (n === 0) return
      this.offset += n
      this.rest += buf.toString('utf8', 0, n)
      const parts = this.rest.split('\n')
      this.rest = parts.pop()
      this.lines.push(...parts)
    }
  }

  #finishFile() {
    if (this.rest !== '') this.torn.push(this.rest.slice(0, 200))
    this.rest = ''
    fs.closeSync(this.fd)
    this.fd = null
    this.lastN = this.rotatedN
    this.rotatedN = null
  }

  close() {
    if (this.fd !== null) fs.closeSync(this.fd)
    this.fd = null
  }
}

function statIno(file) {
  try {
    return fs.statSync(file).ino
  } catch (e) {
    if (e.code === 'ENOENT') return null
    throw e
  }
}

function openIfExists(file) {
  try {
    return fs.openSync(file, 'r')
  } catch (e) {
    if (e.code === 'ENOENT') return null
    throw e
  }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/** Calls `onLine` for every complete line of a readable stream. */
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
}

/** fixtures/run-sync.js in a child process; `events` fills with its events as they arrive. */
function runSync(t, options, mode = 'run') {
  const child = spawn(process.execPath, [RUN_SYNC, JSON.stringify(options), mode], { stdio: ['ignore', 'pipe', 'inherit'] })
  const events = []
  eachLine(child.stdout, (line) => line.trim() && events.push(JSON.parse(line)))
  const exited = once(child, 'exit')
  t.after(() => child.kill('SIGKILL'))
  return { child, events, exited }
}

const inState = (run, state) => run.events.some((e) => e.type === 'state' && e.state === state)
const batches = (events, phase) => events.filter((e) => e.type === 'batch' && e.phase === phase).length

/** Waits for a child to reach `state`; fails at once if its start failed. */
async function waitForChildState(run, state, timeoutMs = 60000) {
  const reached = await waitFor(
    `the child to reach '${state}'`,
    () => (inState(run, state) && 'ok') || run.events.find((e) => e.type === 'start-failed' || (e.type === 'state' && e.state === 'failed')),
    timeoutMs,
    20,
  )
  if (reached !== 'ok') throw new Error(`the child failed instead of reaching '${state}': ${JSON.stringify(reached)}`)
}

// ---------------------------------------------------------------------------------------------
// TCP receiver

/**
 * A line receiver like Logstash's tcp input with the json_lines codec: collects every complete
 * line of every connection, in arrival order; what a closed connection left after its last line
 * break is kept apart in `fragments` (a line cut by the connection's end, not a record).
 */
async function lineServer() {
  const srv = { port: 0, server: null, received: [], fragments: [], connections: 0, sockets: new Set(), reading: true }
  const onConnection = (socket) => {
    const conn = ++srv.connections
    srv.sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => srv.sockets.delete(socket))
    // A receiver that stalls: what arrives stays unread until the connection is reset.
    if (!srv.reading) return socket.pause()
    let buffer = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk) => {
      buffer += chunk
      let nl
      while ((nl = buffer.indexOf('\n')) >= 0) {
        srv.received.push({ conn, line: buffer.slice(0, nl) })
        buffer = buffer.slice(nl + 1)
      }
    })
    socket.on('close', () => buffer && srv.fragments.push({ conn, text: buffer.slice(0, 200) }))
  }
  srv.listen = async () => {
    const server = net.createServer(onConnection)
    await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: '127.0.0.1', port: srv.port }, resolve)
    })
    srv.port = server.address().port
    srv.server = server
  }
  /** Drops every open connection (the sender sees a reset or an end). */
  srv.dropConnections = () => {
    for (const socket of srv.sockets) socket.destroy()
  }
  /** Resets every open connection, as a receiver that crashes with unread data does. */
  srv.resetConnections = () => {
    for (const socket of srv.sockets) socket.resetAndDestroy()
  }
  /** Stops listening and drops the connections: the port refuses connections until `listen()`. */
  srv.close = async () => {
    const server = srv.server
    srv.server = null
    if (!server) return
    const closed = new Promise((resolve) => server.close(resolve))
    srv.dropConnections()
    await closed
  }
  await srv.listen()
  return srv
}

// ---------------------------------------------------------------------------------------------
// NATS

/** A NATS connection with JetStream, or an error that says what the test needs. */
async function natsJetStream() {
  const { connect } = require('nats')
  let nc
  try {
    nc = await connect({ servers: NATS_URL, timeout: 5000, reconnect: false })
  } catch (e) {
    throw new Error(`the nats output test needs a NATS server with JetStream at ${NATS_URL} (set NATS_URL to use another one): cannot connect: ${e.message}`)
  }
  try {
    const jsm = await nc.jetstreamManager()
    return { nc, jsm, js: nc.jetstream() }
  } catch (e) {
    await nc.close()
    throw new Error(`the NATS server at ${NATS_URL} has no JetStream (start nats-server with -js): ${e.message}`)
  }
}

/** Every message of a stream, oldest first, read with an ordered consumer. */
async function readStream(nats, stream) {
  const info = await nats.jsm.streams.info(stream)
  if (info.state.messages === 0) return []
  const consumer = await nats.js.consumers.get(stream)
  const messages = await consumer.consume()
  const out = []
  const reading = (async () => {
    for await (const m of messages) {
      out.push({ subject: m.subject, seq: m.seq, msgId: m.headers?.get('Nats-Msg-Id') || null, text: m.string() })
      if (m.info.pending === 0) break
    }
  })()
  await withTimeout(reading, 30000, `reading stream ${stream} timed out after ${out.length} messages`)
  return out
}

async function streamMessages(nats, stream) {
  try {
    return (await nats.jsm.streams.info(stream)).state.messages
  } catch {
    return 0 // not created yet
  }
}

// ---------------------------------------------------------------------------------------------

test('invalid outputs options throw ERR_CONFIG naming the field', () => {
  const base = () => ({
    name: 'out-cfg',
    mongo: { uri: 'mongodb://127.0.0.1:1/?replicaSet=rs0&serverSelectionTimeoutMS=1500' },
    collections: ['shop.orders'],
  })
  const es = { node: 'http://127.0.0.1:1' }
  const throwsConfig = (options, ...patterns) =>
    assert.throws(
      () => new MongoElasticSync(options),
      (e) => {
        assert.ok(e instanceof Error, 'an Error')
        assert.equal(e.code, 'ERR_CONFIG', e.message)
        for (const p of patterns) assert.match(e.message, p)
        return true
      },
      `expected ERR_CONFIG for ${JSON.stringify(options.outputs)}`,
    )
  const file = { type: 'file', path: path.join(os.tmpdir(), 'never-written.ndjson') }

  throwsConfig({ ...base(), outputs: [{ type: 'nope' }] }, /outputs\[0\]/)
  throwsConfig({ ...base(), outputs: [{ type: 'file' }] }, /outputs\[0\]/, /path/)
  throwsConfig({ ...base(), outputs: [{ type: 'stdout' }, { type: 'file' }] }, /outputs\[1\]/, /path/)
  throwsConfig({ ...base(), outputs: [{ ...file, fsync: 'sometimes' }] }, /outputs\[0\]/, /fsync/)
  throwsConfig({ ...base(), outputs: [{ type: 'nats' }] }, /outputs\[0\]/, /url/)
  throwsConfig({ ...base(), outputs: [{ type: 'tcp', host: '127.0.0.1', port: 0 }] }, /outputs\[0\]/, /port/)
  throwsConfig({ ...base(), outputs: [{ type: 'tcp', host: '127.0.0.1', port: 70000 }] }, /outputs\[0\]/, /port/)
  throwsConfig({ ...base(), outputs: [] }, /outputs/)
  throwsConfig({ ...base(), outputs: [file, { ...file, rotateBytes: 1 << 20 }] }, /outputs\[1\]/) // two outputs writing one file
  throwsConfig({ ...base(), outputs: [{ type: 'elasticsearch' }] }, /elasticsearch/)
  throwsConfig({ ...base(), outputs: [file, { type: 'elasticsearch' }] }, /elasticsearch/)
  throwsConfig(base(), /elasticsearch/) // no outputs: Elasticsearch, which needs its options

  // Valid: Elasticsearch options are needed only for an Elasticsearch output.
  for (const outputs of [[file], [{ type: 'stdout' }], [{ type: 'tcp', host: '127.0.0.1', port: 5045 }], [{ type: 'nats', url: NATS_URL }], [{ type: 'elasticsearch' }, file]]) {
    const options = { ...base(), outputs, ...(outputs.some((o) => o.type === 'elasticsearch') ? { elasticsearch: es } : {}) }
    assert.doesNotThrow(() => new MongoElasticSync(options), `valid: ${JSON.stringify(outputs)}`)
  }
  assert.doesNotThrow(() => new MongoElasticSync({ ...base(), elasticsearch: es }), 'no outputs: Elasticsearch, as before')
})

test('outputs', async (t) => {
  const ctx = await setup('outputs')
  t.after(() => ctx.teardown())
  const mongo = { uri: ctx.mongoUrl }

  /** A fresh database with collection `name` holding `docs`. */
  async function collectionWith(prefix, docs, name = 'items') {
    const db = ctx.mongo.db(unique(prefix))
    const coll = db.collection(name)
    if (docs.length) await coll.insertMany(docs)
    return { db, coll, namespace: `${db.databaseName}.${name}`, index: unique(prefix) }
  }

  await t.test('file: copy and stream, read by a tailing reader across rotations, replay to the collection', async (t) => {
    const N = 200
    const initial = Array.from({ length: N }, (_, i) => makeDoc(i, 60))
    const { coll, namespace, index } = await collectionWith('file', initial)
    const file = path.join(tempDir(t, 'file'), 'changes.ndjson')
    const rotateBytes = 4096
    const maxDocs = 20
    const tailer = new Tailer(file)
    const ticker = setInterval(() => tailer.poll(), 20)
    t.after(() => {
      clearInterval(ticker)
      tailer.close()
    })

    const { sync } = await startStreaming(t, {
      name: unique('file'),
      mongo,
      outputs: [{ type: 'file', path: file, rotateBytes, keepFiles: 1000 }],
      collections: [{ namespace, index }],
      batch: { maxDocs, flushIntervalMs: 100 },
    })
    const changes = await watchChanges(t, coll)
    const tailed = () => tailer.lines.map(parseRecord)

    // Round 1: inserts; updates (one document twice), replaces and deletes of copied documents.
    const inserted = Array.from({ length: 30 }, (_, i) => makeDoc(1000 + i, 60))
    await coll.insertMany(inserted)
    await coll.bulkWrite([
      ...Array.from({ length: 20 }, (_, i) => ({ updateOne: { filter: { _id: i }, update: { $set: { s: `updated ${i}` }, $inc: { n: 1 } } } })),
      { updateOne: { filter: { _id: 0 }, update: { $push: { tags: 'again' } } } },
      ...[20, 21, 22].map((i) => ({ replaceOne: { filter: { _id: i }, replacement: { s: 'replaced', list: [1, 2, 3] } } })),
      ...Array.from({ length: 15 }, (_, i) => ({ deleteOne: { filter: { _id: 100 + i } } })),
    ])
    await waitFor('round 1 in the file', () => changes.length === 69 && tailed().length >= N + 69)
    // Round 2: changes of the documents inserted in round 1.
    await coll.bulkWrite([
      ...Array.from({ length: 10 }, (_, i) => ({ updateOne: { filter: { _id: 1000 + i }, update: { $set: { s: 'updated after insert' } } } })),
      ...Array.from({ length: 5 }, (_, i) => ({ deleteOne: { filter: { _id: 1010 + i } } })),
      ...Array.from({ length: 5 }, (_, i) => ({ insertOne: { document: makeDoc(2000 + i) } })),
    ])
    await waitFor('round 2 in the file', () => changes.length === 89 && tailed().length >= N + 89)
    await sync.stop()
    tailer.poll()

    assert.ifError(tailer.error)
    assert.deepEqual(tailer.torn, [], 'every rotated file ends with a complete line')
    assert.equal(tailer.rest, '', 'the active file ends with a complete line')
    const records = tailed()
    for (const r of records) {
      assert.equal(r.namespace, namespace)
      assert.equal(r.index, index)
      assert.equal(typeof r.id, 'string')
      assert.equal(typeof r.version, 'bigint', `a version: ${JSON.stringify(r, (k, v) => (typeof v === 'bigint' ? String(v) : v))}`)
      assert.ok(!('routing' in r), 'no routing when none is configured')
    }

    // The copy: one record per document, all with the version of the copy's start point, first.
    const copies = records.filter((r) => r.operation === 'copy')
    assert.equal(copies.length, N)
    assert.deepEqual(copies.map((r) => r.id).sort(), initial.map((d) => String(d._id)).sort())
    const byId = new Map(initial.map((d) => [String(d._id), d]))
    for (const r of copies) {
      assert.equal(r.action, 'index')
      assert.deepEqual(sortKeys(r.document), sortKeys(withoutId(byId.get(r.id))))
    }
    const t0 = copies[0].version
    assert.ok(copies.every((r) => r.version === t0), 'every copy record carries the version of the start point')
    assert.ok(records.slice(0, N).every((r) => r.operation === 'copy'), 'the copy records come before the streamed ones')

    // The stream: exactly the changes, in change order, with the documented versions and actions.
    const streamed = records.slice(N)
    assert.deepEqual(streamed.map(brief), changes)
    const insertedById = new Map([...inserted, ...Array.from({ length: 5 }, (_, i) => makeDoc(2000 + i))].map((d) => [String(d._id), d]))
    for (const r of streamed) {
      assert.ok(r.version > t0)
      assert.equal(r.action, r.operation === 'delete' ? 'delete' : 'index', `${r.operation} ${r.id}`)
      if (r.action === 'delete') assert.equal(r.document, null)
      else assert.equal(typeof r.document, 'object')
      if (r.operation === 'insert') assert.deepEqual(sortKeys(r.document), sortKeys(withoutId(insertedById.get(r.id))))
    }

    // For every id the last record is the final state (versions only grow in file order).
    const last = new Map()
    for (const r of records) {
      const prev = last.get(r.id)
      assert.ok(!prev || prev.version <= r.version, `records of ${r.id} in change order`)
      last.set(r.id, r)
    }
    const lastState = new Map([...last].filter(([, r]) => r.action === 'index').map(([id, r]) => [id, r.document]))
    const diff = await diffState(coll, lastState)
    assert.ok(diff.same, describeDiff(diff))
    assert.equal(diff.count, N + 30 - 15 - 5 + 5)

    // Rotation: path.1 … path.k, none deleted (keepFiles is large), each bounded by rotateBytes
    // plus one batch; all files in order hold exactly the lines the tailing reader saw.
    const rotated = rotatedFiles(file)
    assert.ok(rotated.length >= 3, `rotated ${rotated.length} times`)
    assert.deepEqual(rotated.map((r) => r.n), rotated.map((_, i) => i + 1))
    const longest = Math.max(...tailer.lines.map((l) => Buffer.byteLength(l) + 1))
    for (const r of rotated) {
      const size = fs.statSync(r.file).size
      assert.ok(size > 0 && size <= rotateBytes + maxDocs * longest, `${path.basename(r.file)}: ${size} bytes`)
    }
    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    assert.deepEqual(all.lines, tailer.lines, 'rotated files by n ascending, then the active file, are the records in order')
    const replayed = await diffState(coll, replay(all.lines.map(parseRecord), index))
    assert.ok(replayed.same, describeDiff(replayed))
  })

  await t.test('file: keepFiles keeps only the newest rotated files (a one-shot copy)', async (t) => {
    const N = 150
    const { coll, namespace, index } = await collectionWith('keep', Array.from({ length: N }, (_, i) => makeDoc(i, 100)))
    const file = path.join(tempDir(t, 'keep'), 'copy.ndjson')
    const sync = new MongoElasticSync({
      name: unique('keep'),
      mongo,
      mode: 'copy',
      outputs: [{ type: 'file', path: file, rotateBytes: 4096, keepFiles: 2, fsync: 'never' }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 10 },
    })
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    await withTimeout(sync.wait(), 120000, 'the copy did not finish')

    const rotated = rotatedFiles(file)
    assert.equal(rotated.length, 2, `kept: ${rotated.map((r) => r.n)}`)
    assert.equal(rotated[1].n, rotated[0].n + 1, 'the two newest are kept')
    assert.ok(rotated[0].n >= 2, `older rotated files were deleted (kept ${rotated.map((r) => r.n)})`)
    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    const records = all.lines.map(parseRecord)
    assert.ok(records.length > 0 && records.length < N, `${records.length} of ${N} records kept`)
    const ids = records.map((r) => r.id)
    assert.equal(new Set(ids).size, ids.length, 'no record twice')
    const exists = new Set((await coll.find({}, { projection: { _id: 1 } }).toArray()).map((d) => String(d._id)))
    for (const r of records) {
      assert.equal(r.operation, 'copy')
      assert.equal(r.action, 'index')
      assert.ok(exists.has(r.id), r.id)
    }
  })

  await t.test('file: rotateSeconds rotates a file that is that old at the next batch', async (t) => {
    const { coll, namespace, index } = await collectionWith('age', [makeDoc(0)])
    const file = path.join(tempDir(t, 'age'), 'changes.ndjson')
    await startStreaming(t, {
      name: unique('age'),
      mongo,
      outputs: [{ type: 'file', path: file, rotateSeconds: 1 }],
      collections: [{ namespace, index }],
      batch: { flushIntervalMs: 100 },
    })
    /** Which file (n of path.n, Infinity for the active one) holds the record of `id`. */
    const fileOf = (id) => {
      for (const f of [...rotatedFiles(file), { n: Infinity, file }]) {
        const lines = fs.existsSync(f.file) ? fs.readFileSync(f.file, 'utf8').split('\n').filter(Boolean) : []
        if (lines.some((l) => parseRecord(l).id === id)) return f.n
      }
      return null
    }
    await waitFor('the copy record', () => fileOf('0') !== null)
    await coll.insertOne(makeDoc(1))
    await waitFor('the first change', () => fileOf('1') !== null)
    assert.deepEqual(rotatedFiles(file), [], 'not rotated while younger than rotateSeconds')
    await sleep(1500) // the age that makes the file due for rotation
    // Rotation happens between batches: the next batch is written, then the file is rotated
    // (or the file is rotated, then the batch written to a new one).
    await coll.insertOne(makeDoc(2))
    await waitFor('the second change and a rotation', () => fileOf('2') !== null && rotatedFiles(file).length >= 1)
    assert.ok(Number.isFinite(fileOf('1')), 'the old file was rotated')
    await coll.insertOne(makeDoc(3))
    await waitFor('the third change', () => fileOf('3') !== null)
    assert.ok(fileOf('1') < fileOf('3'), `a change after the rotation is in a newer file (${fileOf('1')} < ${fileOf('3')})`)
    assert.equal(rotatedFiles(file).length, 1, 'a young file is not rotated again')
    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    assert.deepEqual(all.lines.map((l) => parseRecord(l).id), ['0', '1', '2', '3'])
  })

  await t.test('file: records for filters, routing, dead letters, rename and drop', async (t) => {
    const { db, coll, namespace, index } = await collectionWith('fmt', [
      { _id: 1, kind: 'keep', tenant: 't1', v: 1 },
      { _id: 2, kind: 'keep', tenant: 't2', v: 2 },
      { _id: 3, kind: 'other', tenant: 't1', v: 3 },
      { _id: 4, kind: 'keep', tenant: 't2', bad: true },
    ])
    const other = db.collection('r')
    await other.insertMany([{ _id: 'a', v: 1 }, { _id: 'b', v: 2 }])
    const otherIndex = unique('fmt_r')
    const dlq = unique('fmt_dlq')
    const file = path.join(tempDir(t, 'fmt'), 'changes.ndjson')
    const sync = new MongoElasticSync({
      name: unique('fmt'),
      mongo,
      outputs: [{ type: 'file', path: file }],
      collections: [{ namespace, index, filter: { kind: 'keep' }, routing: 'tenant' }, { namespace: `${db.databaseName}.r`, index: otherIndex }],
      deadLetterIndex: dlq,
      batch: { flushIntervalMs: 100 },
    })
    sync.setTransform((doc) => {
      if (doc.bad) throw new Error('bad document')
      return doc
    })
    const events = []
    sync.onEvent((e) => events.push(e))
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    await waitFor('streaming', () => events.some((e) => e.type === 'state' && e.state === 'streaming'))
    const records = () => readRecordsNow(file) || []

    const copied = await waitFor('the copy records', () => {
      const r = records().filter((x) => x.operation === 'copy')
      return r.length === 4 && r
    })
    const copy = (id) => copied.find((r) => r.namespace === namespace && r.id === id)
    assert.deepEqual(copy('1').document, { kind: 'keep', tenant: 't1', v: 1 })
    assert.equal(copy('1').routing, 't1')
    assert.equal(copy('2').routing, 't2')
    assert.equal(copy('3'), undefined, 'filtered out of the copy')
    assert.equal(copy('4'), undefined, 'dead-lettered, not copied')
    assert.deepEqual(copied.filter((r) => r.index === otherIndex).map((r) => r.id).sort(), ['a', 'b'])
    assert.ok(copied.filter((r) => r.index === otherIndex).every((r) => !('routing' in r)))

    const dead = await waitFor('the dead letter record', () => records().find((r) => r.operation === 'deadLetter'))
    assert.equal(dead.namespace, namespace)
    assert.equal(dead.index, dlq)
    assert.equal(dead.id, `${namespace}:4`)
    assert.equal(dead.action, 'index')
    assert.equal(typeof dead.version, 'bigint')
    assert.equal(dead.document.namespace, namespace)
    assert.equal(dead.document.index, index)
    assert.equal(dead.document.id, '4')
    assert.match(dead.document.reason, /bad document/)
    assert.match(JSON.stringify(dead.document.document), /bad/)
    assert.ok(!Number.isNaN(Date.parse(dead.document.at)), `at: ${dead.document.at}`)

    // Out of the filter: operation update, action delete; into it: update, index.
    await coll.updateOne({ _id: 1 }, { $set: { kind: 'other' } })
    await coll.updateOne({ _id: 3 }, { $set: { kind: 'keep' } })
    const [out, into] = await waitFor('the filter moves', () => {
      const r = records().filter((x) => x.operation === 'update' && x.namespace === namespace)
      return r.length >= 2 && r
    })
    assert.equal(out.id, '1')
    assert.equal(out.namespace, namespace)
    assert.equal(out.index, index)
    assert.equal(out.action, 'delete', 'updated out of the filter: deleted from the index')
    assert.equal(out.document, null)
    assert.equal(into.id, '3')
    assert.equal(into.action, 'index')
    assert.equal(into.routing, 't1')
    assert.deepEqual(into.document, { kind: 'keep', tenant: 't1', v: 3 })
    assert.ok(into.version > out.version)

    // Collection-level records: a rename (onRename 'move': the documents move to the new name's
    // index, then the old index is emptied) and a drop (onDrop 'deleteDocuments').
    const target = unique('fmt_moved')
    await other.rename(target)
    const [reindex, emptied] = await waitFor('the rename records', () => {
      const r = records().filter((x) => x.namespace === `${db.databaseName}.r` && x.action === null)
      return r.length >= 2 && r
    })
    assert.equal(reindex.operation, 'reindex')
    assert.equal(reindex.index, otherIndex)
    assert.equal(reindex.to, target)
    assert.ok(!('document' in reindex) || reindex.document == null)
    assert.equal(emptied.operation, 'deleteDocuments')
    assert.equal(emptied.index, otherIndex)

    await coll.drop()
    const dropped = await waitFor('the deleteDocuments record', () => records().find((r) => r.operation === 'deleteDocuments' && r.namespace === namespace))
    assert.equal(dropped.index, index)
    assert.equal(dropped.action, null)
    await waitFor('the drop event', () => events.some((e) => e.type === 'change' && e.operation === 'drop'))
    await sync.stop()
    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    all.lines.forEach(parseRecord)
  })

  await t.test('file: SIGKILL during the copy and during the stream under a write load, then restart: nothing missing', async (t) => {
    const N = 1000
    const { coll, namespace, index } = await collectionWith('fkill', Array.from({ length: N }, (_, i) => makeDoc(i, 150)))
    const file = path.join(tempDir(t, 'fkill'), 'changes.ndjson')
    const options = {
      name: unique('fkill'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'file', path: file, rotateBytes: 32 * 1024, keepFiles: 1000 }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 50, flushIntervalMs: 100 },
    }
    const changes = await watchChanges(t, coll)
    const ids = Array.from({ length: N }, (_, i) => i)
    const writer = startWriter(coll, { seed: 20261123, updatable: ids.filter((i) => i % 4 !== 0), deletable: ids.filter((i) => i % 4 === 0).reverse(), nextId: 10000, pad: 150 })
    t.after(() => writer.stop())

    // 1: killed as soon as the first copy batch is written.
    const first = runSync(t, options)
    await waitFor('a copy batch', () => batches(first.events, 'copy') >= 1 || inState(first, 'streaming') || first.events.find((e) => e.type === 'start-failed'), 60000, 5)
    first.child.kill('SIGKILL')
    assert.ok(!first.events.some((e) => e.type === 'start-failed'), JSON.stringify(first.events.find((e) => e.type === 'start-failed')))
    await first.exited
    const firstStates = first.events.filter((e) => e.type === 'state').map((e) => e.state)
    t.diagnostic(`first run killed while ${firstStates.at(-1)} after ${batches(first.events, 'copy')} copy batch(es)`)

    // 2: killed mid-stream, after a few stream batches.
    const second = runSync(t, options)
    await waitForChildState(second, 'streaming')
    await waitFor('stream batches', () => batches(second.events, 'stream') >= 3, 60000, 5)
    second.child.kill('SIGKILL')
    await second.exited
    // A write torn by the crash: the restart must cut it off.
    const TORN = '{"operation":"insert","namespace":"torn by the test'
    fs.appendFileSync(file, TORN)

    // 3: the last run catches up; the load stops meanwhile.
    const third = runSync(t, options)
    await waitForChildState(third, 'streaming')
    await waitFor('stream batches after the restart', () => batches(third.events, 'stream') >= 2, 60000, 20)
    const ops = await writer.stop()
    await waitFor('the test change stream to see every change', () => changes.length === ops)
    const records = await waitForReplay('the files to replay to the collection', () => readRecordsNow(file), coll, index, 90000)
    const t0 = records.find((r) => r.operation === 'copy').version
    const expected = changes.filter((c) => c.version > t0)
    await waitFor('every change after the start point in the files', () => {
      const keys = new Set((readRecordsNow(file) || []).map(changeKey))
      return expected.every((c) => keys.has(changeKey(c)))
    })
    third.child.kill('SIGTERM')
    const [code] = await withTimeout(third.exited, 30000, 'the last run did not stop on SIGTERM')
    assert.equal(code, 0)

    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [], 'only complete lines after a clean stop')
    assert.ok(!all.lines.some((l) => l.includes('torn by the test')), 'the torn line was cut off at restart')
    const final = all.lines.map(parseRecord) // every line is a complete JSON record
    assert.ok(final.filter((r) => r.operation === 'copy').every((r) => r.version === t0), 'the resumed copy keeps its start point')
    const keys = new Set(final.map(changeKey))
    const lost = expected.filter((c) => !keys.has(changeKey(c)))
    assert.deepEqual(lost, [], 'no change is missing')
    const diff = await diffState(coll, replay(final, index))
    assert.ok(diff.same, describeDiff(diff))
    t.diagnostic(`${final.length} records for ${N} copied documents and ${expected.length} changes; ${rotatedFiles(file).length} rotated files`)
  })

  await t.test('stdout: a one-shot copy prints exactly the documents as copy records, then the process exits', async (t) => {
    const N = 120
    const docs = Array.from({ length: N }, (_, i) => ({ _id: new ObjectId(), i, s: `doc ${i}`, nested: { list: [i, `${i}`] } }))
    const { namespace, index } = await collectionWith('stdout', docs)
    const options = { name: unique('stdout'), mongo, mode: 'copy', outputs: [{ type: 'stdout' }], collections: [{ namespace, index }], batch: { maxDocs: 50 } }
    const child = spawn(process.execPath, [RUN_STDOUT, JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'pipe'] })
    t.after(() => child.kill('SIGKILL'))
    let stdout = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (d) => (stdout += d))
    const events = []
    const stderr = []
    eachLine(child.stderr, (line) => {
      stderr.push(line)
      try {
        events.push(JSON.parse(line))
      } catch {
        // engine logs, if MONGO_ELASTIC_SYNC_LOG is set
      }
    })
    const [code] = await withTimeout(once(child, 'exit'), 120000, 'the process did not exit by itself after the copy')
    assert.equal(code, 0, stderr.join('\n'))
    assert.ok(events.some((e) => e.type === 'waited'), 'wait() resolved')
    assert.ok(events.some((e) => e.type === 'state' && e.state === 'stopped'), JSON.stringify(events.filter((e) => e.type === 'state')))

    assert.ok(stdout.endsWith('\n'), 'stdout ends with a complete line')
    const records = stdout.slice(0, -1).split('\n').map(parseRecord)
    assert.equal(records.length, N, 'one record per document, nothing else on stdout')
    const byId = new Map(docs.map((d) => [d._id.toHexString(), d]))
    assert.deepEqual(records.map((r) => r.id).sort(), [...byId.keys()].sort())
    for (const r of records) {
      assert.equal(r.operation, 'copy')
      assert.equal(r.action, 'index')
      assert.equal(r.namespace, namespace)
      assert.equal(r.index, index)
      assert.equal(typeof r.version, 'bigint')
      assert.deepEqual(sortKeys(r.document), sortKeys(withoutId(byId.get(r.id))))
    }
  })

  await t.test('tcp: every change reaches a receiver that drops connections and goes away for a while', async (t) => {
    const N = 150
    const { coll, namespace, index } = await collectionWith('tcp', Array.from({ length: N }, (_, i) => makeDoc(i)))
    const server = await lineServer()
    t.after(() => server.close())
    const { sync, events } = await startStreaming(t, {
      name: unique('tcp'),
      mongo,
      outputs: [{ type: 'tcp', host: '127.0.0.1', port: server.port, connectTimeoutMs: 2000 }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 25, flushIntervalMs: 100 },
      retry: { initialDelayMs: 100, maxDelayMs: 1000 },
    })
    const changes = await watchChanges(t, coll)
    const received = () => server.received.map((x) => parseRecord(x.line))
    const streamedKeys = () => new Set(received().filter((r) => r.operation !== 'copy').map(changeKey))

    await waitFor('the copy records', () => new Set(received().filter((r) => r.operation === 'copy').map((r) => r.id)).size === N)
    const ids = Array.from({ length: N }, (_, i) => i)
    const writer = startWriter(coll, { seed: 5045, updatable: ids.filter((i) => i % 3 !== 0), deletable: ids.filter((i) => i % 3 === 0), nextId: 10000 })
    t.after(() => writer.stop())
    await waitFor('streamed changes', () => streamedKeys().size >= 30)

    // 1: the receiver drops the connection in the middle of the stream.
    server.dropConnections()
    await waitFor('a new connection', () => server.connections >= 2)
    const afterDrop = streamedKeys().size
    await waitFor('changes after the reconnection', () => streamedKeys().size >= afterDrop + 30)

    // 2: the receiver is gone (connections refused) for 2 s while changes go on, then back on the same port.
    await server.close()
    const connectionsBefore = server.connections
    const changesBefore = changes.length
    await sleep(2000)
    assert.ok(changes.length > changesBefore, 'changes were made during the outage')
    await server.listen()
    await waitFor('a connection after the outage', () => server.connections > connectionsBefore, 30000)
    const ops = await writer.stop()
    await waitFor('the test change stream to see every change', () => changes.length === ops)

    await waitFor('every change at the receiver', () => {
      const keys = streamedKeys()
      return changes.length > 0 && changes.every((c) => keys.has(changeKey(c)))
    })
    const records = received() // every line that ended with a line break is a JSON record
    const diff = await diffState(coll, replay(records, index))
    assert.ok(diff.same, describeDiff(diff))

    // Duplicates are allowed, loss is not, and the first sight of each change is in change order.
    const firstSeen = []
    const seen = new Set()
    for (const r of records) {
      if (r.operation === 'copy') continue
      assert.equal(r.action, r.operation === 'delete' ? 'delete' : 'index')
      const key = changeKey(r)
      if (!seen.has(key)) firstSeen.push(key)
      seen.add(key)
    }
    assert.deepEqual(firstSeen, changes.map(changeKey), 'each change arrives, in change order, and nothing else')
    const streamedCount = records.filter((r) => r.operation !== 'copy').length
    t.diagnostic(
      `${changes.length} changes, ${streamedCount} stream lines (${streamedCount - changes.length} repeated) over ${server.connections} connections; ` +
        `${server.fragments.length} cut lines at connection ends; ${events.filter((e) => e.type === 'retry').length} retry events`,
    )
    assert.ok(server.connections >= 3)
    await sync.stop()
  })

  await t.test('tcp: a change made right after the receiver closed the connection arrives, with nothing after it', async (t) => {
    const { coll, namespace, index } = await collectionWith('tcpquiet', [makeDoc(0)])
    const server = await lineServer()
    t.after(() => server.close())
    const { sync } = await startStreaming(t, {
      name: unique('tcpquiet'),
      mongo,
      outputs: [{ type: 'tcp', host: '127.0.0.1', port: server.port }],
      collections: [{ namespace, index }],
      batch: { flushIntervalMs: 100 },
      retry: { initialDelayMs: 100, maxDelayMs: 1000 },
    })
    const has = (operation, id) => server.received.some((x) => parseRecord(x.line).operation === operation && parseRecord(x.line).id === id)
    await waitFor('the copy record', () => has('copy', '0'))
    await coll.insertOne(makeDoc(1))
    await waitFor('the first change', () => has('insert', '1'))
    // The receiver closes the connection (as Logstash does when it restarts) while the stream is quiet.
    server.dropConnections()
    await waitFor('the connection to be closed', () => server.sockets.size === 0)
    await coll.insertOne(makeDoc(2))
    // Nothing else happens: the change must not wait for a next one to be delivered.
    await waitFor('the change made after the close, at the receiver', () => has('insert', '2'), 20000)
    assert.ok(server.connections >= 2)
    await sync.stop()
  })

  await t.test('tcp: lines the receiver lost just before the sync stops are sent again at stop()', async (t) => {
    const N = 20
    const { namespace, index } = await collectionWith('tcpstop', Array.from({ length: N }, (_, i) => makeDoc(i)))
    const server = await lineServer()
    t.after(() => server.close())
    server.reading = false
    const { sync, events } = await startStreaming(t, {
      name: unique('tcpstop'),
      mongo,
      outputs: [{ type: 'tcp', host: '127.0.0.1', port: server.port, connectTimeoutMs: 2000 }],
      collections: [{ namespace, index }],
      batch: { flushIntervalMs: 100 },
    })
    // The copy was written (streaming begins after its checkpoint) into a connection nobody reads.
    assert.equal(server.received.length, 0)
    server.reading = true
    server.resetConnections()
    await waitFor('the connection to be gone', () => server.sockets.size === 0)
    // No write follows that could notice the loss: only stop() can.
    await sync.stop()
    const copied = new Set(server.received.map((x) => parseRecord(x.line)).filter((r) => r.operation === 'copy').map((r) => r.id))
    assert.equal(copied.size, N, `copy records at the receiver after stop(): ${copied.size}`)
    assert.equal(server.connections, 2, 'one new connection carried them')
    assert.ok(!events.some((e) => e.type === 'state' && e.state === 'failed'), JSON.stringify(events.filter((e) => e.type === 'state')))
  })

  await t.test('tcp: lines lost with a receiver that is gone at stop() fail the sync with ERR_OUTPUT, not silently', async (t) => {
    const { namespace, index } = await collectionWith('tcpgone', [makeDoc(0), makeDoc(1)])
    const server = await lineServer()
    t.after(() => server.close())
    server.reading = false
    const { sync, events } = await startStreaming(t, {
      name: unique('tcpgone'),
      mongo,
      outputs: [{ type: 'tcp', host: '127.0.0.1', port: server.port, connectTimeoutMs: 1000 }],
      collections: [{ namespace, index }],
      batch: { flushIntervalMs: 100 },
    })
    server.resetConnections()
    await server.close()
    await sync.stop()
    await assert.rejects(sync.wait(), (e) => {
      assert.equal(e.code, 'ERR_OUTPUT', `${e.code}: ${e.message}`)
      assert.match(e.message, /tcp 127\.0\.0\.1:\d+/)
      assert.match(e.message, /could not be sent again/)
      return true
    })
    const failed = events.find((e) => e.type === 'state' && e.state === 'failed')
    assert.equal(failed?.error?.code, 'ERR_OUTPUT')
  })

  await t.test('tcp over TLS: caFile and serverName are used; a wrong CA is refused, rejectUnauthorized: false is not', async (t) => {
    const { makeCerts, startTlsProxy } = require('./tls-fixtures.js')
    const certs = makeCerts()
    t.after(() => certs.cleanup())
    const server = await lineServer()
    t.after(() => server.close())
    const proxy = await startTlsProxy({ target: `127.0.0.1:${server.port}`, certs })
    t.after(() => proxy.close())
    const N = 20
    const { namespace, index } = await collectionWith('tcptls', Array.from({ length: N }, (_, i) => makeDoc(i)))
    /** A one-shot copy to the TLS receiver with these `tls` options. */
    const copyWith = (tls) =>
      new MongoElasticSync({
        name: unique('tcptls'),
        mongo,
        mode: 'copy',
        outputs: [{ type: 'tcp', host: '127.0.0.1', port: proxy.port, tls }],
        collections: [{ namespace, index }],
        retry: { maxAttempts: 2, initialDelayMs: 100, maxDelayMs: 200 },
      })
    const copies = () => server.received.map((x) => parseRecord(x.line)).filter((r) => r.operation === 'copy').length

    const verified = copyWith({ caFile: certs.caFile, serverName: 'localhost' })
    await verified.start()
    await withTimeout(verified.wait(), 60000, 'the copy over TLS did not finish')
    await waitFor('the copy over TLS', () => copies() === N)

    const wrong = copyWith({ caFile: certs.otherCaFile })
    await assert.rejects(
      withTimeout(wrong.start().then(() => wrong.wait()), 60000, 'a wrong CA neither failed nor finished'),
      (e) => {
        assert.match(String(e.code), /^ERR_OUTPUT/, `${e.code}: ${e.message}`)
        assert.match(e.message, /certificate|issuer|tls|handshake/i)
        return true
      },
    )
    assert.equal(copies(), N, 'nothing went through without a verified certificate')

    const insecure = copyWith({ caFile: certs.otherCaFile, rejectUnauthorized: false })
    await insecure.start()
    await withTimeout(insecure.wait(), 60000, 'the unverified copy did not finish')
    await waitFor('the unverified copy', () => copies() === 2 * N)
  })

  await t.test('nats: JetStream holds every change exactly once, also after a SIGKILL and restart', async (t) => {
    const nats = await natsJetStream()
    const u = unique('nats')
    const stream = `MES_TEST_${u.toUpperCase()}`
    const prefix = `test_${u}`
    t.after(async () => {
      await nats.jsm.streams.delete(stream).catch(() => {})
      await nats.nc.close()
    })
    const N = 100
    const { db, coll, namespace, index } = await collectionWith('nats', Array.from({ length: N }, (_, i) => makeDoc(i)))
    const options = {
      name: unique('nats'),
      mongo: { uri: ctx.mongoUrl },
      outputs: [{ type: 'nats', url: NATS_URL, subject: `${prefix}.{db}.{coll}.{index}`, stream }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 25, flushIntervalMs: 100 },
    }
    const changes = await watchChanges(t, coll)

    /** The stream's messages, checked: subject, Msg-Id header, one JSON record each. */
    const read = async () => {
      const messages = await readStream(nats, stream)
      for (const m of messages) {
        assert.equal(m.subject, `${prefix}.${db.databaseName}.items.${index}`)
        assert.ok(m.msgId, `message ${m.seq} has a Nats-Msg-Id header`)
        m.record = parseRecord(m.text)
      }
      return messages
    }

    const first = runSync(t, options)
    await waitForChildState(first, 'streaming')
    await coll.bulkWrite([
      ...Array.from({ length: 20 }, (_, i) => ({ insertOne: { document: makeDoc(1000 + i) } })),
      ...Array.from({ length: 10 }, (_, i) => ({ updateOne: { filter: { _id: i }, update: { $set: { s: 'updated' } } } })),
      { replaceOne: { filter: { _id: 10 }, replacement: { s: 'replaced' } } },
      ...Array.from({ length: 5 }, (_, i) => ({ deleteOne: { filter: { _id: 90 + i } } })),
    ])
    await waitFor('the copy and the changes in the stream', async () => changes.length === 36 && (await streamMessages(nats, stream)) >= N + 36)
    let messages = await read()
    assert.equal(messages.length, N + 36, 'exactly the copy and the changes')
    const copies = messages.slice(0, N).map((m) => m.record)
    assert.ok(copies.every((r) => r.operation === 'copy' && r.action === 'index' && r.namespace === namespace && r.index === index))
    assert.deepEqual(copies.map((r) => r.id).sort(), Array.from({ length: N }, (_, i) => String(i)).sort())
    assert.deepEqual(
      messages.slice(N).map((m) => brief(m.record)),
      changes,
      'the changes, in change order',
    )
    assert.equal(messages.find((m) => m.record.operation === 'replace').record.document.s, 'replaced')
    assert.equal(messages.find((m) => m.record.operation === 'delete').record.document, null)

    // The position saved after round 1 (at once, as the stream went idle).
    const checkpoints = ctx.mongo.db('mongo_elastic_sync').collection('checkpoints')
    const checkpointId = `${options.name}:${namespace}`
    const afterRound1 = await waitFor('the checkpoint after round 1', async () => (await checkpoints.findOne({ _id: checkpointId }))?.resumeToken)

    // Crash right after a batch was acknowledged, under a write load; then restart.
    const ids = Array.from({ length: N }, (_, i) => i)
    const writer = startWriter(coll, { seed: 4222, updatable: ids.filter((i) => i % 3 !== 0 && i < 90), deletable: ids.filter((i) => i % 3 === 0 && i < 90), nextId: 10000 })
    t.after(() => writer.stop())
    const before = await streamMessages(nats, stream)
    let last = before
    await waitFor(
      'a batch acknowledged under load',
      async () => {
        const now = await streamMessages(nats, stream)
        const grew = now > last && now >= before + 40
        last = now
        return grew
      },
      60000,
      10,
    )
    first.child.kill('SIGKILL')
    await first.exited
    const atKill = await streamMessages(nats, stream)
    // While changes flow, the position is saved at most once a second, so a crash usually
    // replays a little. To make the replay certain, the saved position goes back to where it was
    // before the load, as if the crash had come before any later save: the restarted sync
    // publishes everything since round 1 again, and JetStream must drop it all as duplicates.
    await checkpoints.updateOne({ _id: checkpointId }, { $set: { resumeToken: afterRound1 } })

    const second = runSync(t, options)
    await waitForChildState(second, 'streaming')
    await waitFor('changes through the restarted sync', async () => (await streamMessages(nats, stream)) >= atKill + 40, 60000)
    const ops = await writer.stop()
    await waitFor('the test change stream to see every change', () => changes.length === 36 + ops)
    await waitFor('every change in the stream', async () => {
      const keys = new Set((await readStream(nats, stream)).map((m) => changeKey(parseRecord(m.text))))
      return changes.every((c) => keys.has(changeKey(c)))
    })
    // Let the restarted sync finish what it read, so that a late duplicate would show.
    second.child.kill('SIGTERM')
    const [code] = await withTimeout(second.exited, 30000, 'the restarted sync did not stop on SIGTERM')
    assert.equal(code, 0)

    messages = await read()
    const count = new Map()
    for (const m of messages) count.set(changeKey(m.record), (count.get(changeKey(m.record)) || 0) + 1)
    const duplicates = [...count].filter(([, n]) => n > 1).map(([key]) => key)
    assert.deepEqual(duplicates, [], 'no change twice in the stream (Nats-Msg-Id dedupe)')
    const keys = new Set(count.keys())
    assert.deepEqual(changes.filter((c) => !keys.has(changeKey(c))), [], 'no change missing')
    assert.equal(messages.length, N + changes.length, 'nothing but the copy and the changes')
    assert.equal(new Set(messages.map((m) => m.msgId)).size, messages.length, 'distinct Nats-Msg-Ids')
    const diff = await diffState(coll, replay(messages.map((m) => m.record), index))
    assert.ok(diff.same, describeDiff(diff))
    const sent = second.events.filter((e) => e.type === 'batch' && e.phase === 'stream').reduce((n, e) => n + e.indexed + e.deleted, 0)
    const dropped = sent - (messages.length - atKill)
    t.diagnostic(`${changes.length} changes; the restarted sync sent ${sent} records for ${messages.length - atKill} new messages: ${dropped} dropped as duplicates by JetStream`)
    assert.ok(dropped >= atKill - before, `the restarted sync published the ${atKill - before} messages since round 1 again (sent ${sent})`)
  })

  await t.test('nats: a record over the server\'s max_payload is dead-lettered (not retried forever), the rest goes on', async (t) => {
    const nats = await natsJetStream()
    const u = unique('natsbig')
    const stream = `MES_TEST_${u.toUpperCase()}`
    t.after(async () => {
      await nats.jsm.streams.delete(stream).catch(() => {})
      await nats.nc.close()
    })
    const maxPayload = nats.nc.info.max_payload
    const { coll, namespace, index } = await collectionWith('natsbig', [makeDoc(0), { _id: 'big', blob: 'x'.repeat(maxPayload) }, makeDoc(1)])
    const dlq = `${index}-dlq`
    const { events } = await startStreaming(t, {
      name: unique('natsbig'),
      mongo,
      outputs: [{ type: 'nats', url: NATS_URL, subject: `test_${u}.{db}.{coll}`, stream }],
      collections: [{ namespace, index }],
      deadLetterIndex: dlq,
      batch: { flushIntervalMs: 100 },
    })
    // Streamed: the big document again (with its full document), then a small insert.
    await coll.updateOne({ _id: 'big' }, { $set: { n: 1 } })
    await coll.insertOne(makeDoc(2))
    // A batch's dead letters are recorded after its writes: wait for both.
    const records = await waitFor('the insert after the big update, and two dead letters', async () => {
      const r = (await readStream(nats, stream)).map((m) => parseRecord(m.text))
      const lettered = r.filter((x) => x.operation === 'deadLetter').length >= 2 && events.filter((e) => e.type === 'deadLetter').length >= 2
      return r.some((x) => x.operation === 'insert' && x.id === '2') && lettered && r
    })
    assert.deepEqual(records.filter((r) => r.index === index).map((r) => `${r.operation} ${r.id}`), ['copy 0', 'copy 1', 'insert 2'])
    const dead = events.filter((e) => e.type === 'deadLetter')
    assert.deepEqual(dead.map((e) => e.id), ['big', 'big'], 'the copy and the update of the big document')
    for (const e of dead) assert.match(e.reason, new RegExp(`nats .*over the server's max_payload of ${maxPayload}`))
    // Its dead-letter records went to the same output, without the document it could not carry.
    const letters = records.filter((r) => r.operation === 'deadLetter')
    assert.equal(letters.length, 2)
    for (const l of letters) {
      assert.equal(l.index, dlq)
      assert.equal(l.document.id, 'big')
      assert.equal(l.document.document, null)
    }
    assert.ok(!events.some((e) => e.type === 'retry'), 'nothing was retried')
  })

  await t.test('fan-out: Elasticsearch and a file get the same changes', async (t) => {
    const N = 100
    const { coll, namespace, index } = await collectionWith('fan', Array.from({ length: N }, (_, i) => makeDoc(i)))
    const file = path.join(tempDir(t, 'fan'), 'changes.ndjson')
    const { sync, events } = await startStreaming(t, {
      name: unique('fan'),
      mongo,
      elasticsearch: { node: ctx.esUrl },
      outputs: [{ type: 'elasticsearch' }, { type: 'file', path: file }],
      collections: [{ namespace, index }],
      batch: { maxDocs: 50, flushIntervalMs: 100 },
    })
    assert.ok(events.some((e) => e.type === 'connected'), 'Elasticsearch was reached')
    const changes = await watchChanges(t, coll)
    await coll.insertMany(Array.from({ length: 10 }, (_, i) => makeDoc(1000 + i)))
    await coll.bulkWrite([
      ...Array.from({ length: 10 }, (_, i) => ({ updateOne: { filter: { _id: i }, update: { $set: { s: 'fanned out' } } } })),
      { replaceOne: { filter: { _id: 50 }, replacement: { s: 'replaced' } } },
      ...Array.from({ length: 5 }, (_, i) => ({ deleteOne: { filter: { _id: 60 + i } } })),
    ])
    await waitForMirror(ctx, coll, index)
    await waitForReplay('the file to replay to the collection', () => readRecordsNow(file), coll, index)
    await sync.stop()

    const all = readOutputFiles(file)
    assert.deepEqual(all.unterminated, [])
    const records = all.lines.map(parseRecord)
    assert.equal(records.filter((r) => r.operation === 'copy').length, N)
    assert.deepEqual(records.filter((r) => r.operation !== 'copy').map(brief), changes, 'the file has every change, once, in order')
    const indexed = await esDocs(ctx.esUrl, index)
    const fromFile = replay(records, index)
    assert.equal(indexed.size, N + 10 - 5)
    assert.deepEqual([...fromFile.keys()].sort(), [...indexed.keys()].sort())
    for (const [id, doc] of indexed) assert.deepEqual(sortKeys(fromFile.get(id)), sortKeys(doc), id)
  })
})
