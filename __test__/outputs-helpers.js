// Helpers of the outputs tests (__test__/outputs-*.test.mjs): change records and their replay,
// the ground truth (a change stream the test opens itself), a write load, reading a file output
// (also as a tailing log shipper does), a sync in a child process, a TCP line receiver and NATS
// JetStream. Records are checked against that ground truth (operation, id and version of every
// change) and by replaying them as Elasticsearch would (external_gte versions) into the
// collection's final state.
'use strict'

const { once } = require('node:events')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { eachLine, rng, runChild, unique, waitFor, waitForSame, withTimeout } = require('./helpers.js')

const RUN_STDOUT = path.join(__dirname, 'fixtures', 'run-stdout.js')
const NATS_URL = process.env.NATS_URL || 'nats://127.0.0.1:4222'

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** A fresh database of the test servers with collection `name` holding `docs`. */
async function collectionWith(ctx, prefix, docs, name = 'items') {
  const db = ctx.mongo.db(unique(prefix))
  const coll = db.collection(name)
  if (docs.length) await coll.insertMany(docs)
  return { db, coll, namespace: `${db.databaseName}.${name}`, index: unique(prefix) }
}

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

/** Polls `read()` (→ records) until their replay equals the collection; returns the records. */
async function waitForReplay(what, read, coll, index, timeoutMs = 60000) {
  const replayed = async () => {
    const records = await read()
    return records && { docs: replay(records, index), value: records }
  }
  return (await waitForSame(what, coll, replayed, { timeoutMs })).value
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


/** fixtures/run-sync.js in a child process; `events` fills with its events as they arrive. */
function runSync(t, options, mode = 'run') {
  const run = runChild(options, mode)
  t.after(() => run.child.kill('SIGKILL'))
  return run
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
    const rest = eachLine(socket, (line) => srv.received.push({ conn, line }))
    socket.on('close', () => rest() && srv.fragments.push({ conn, text: rest().slice(0, 200) }))
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

module.exports = {
  RUN_STDOUT,
  NATS_URL,
  sleep,
  collectionWith,
  parseRecord,
  versionOf,
  changeKey,
  brief,
  withoutId,
  replay,
  waitForReplay,
  watchChanges,
  makeDoc,
  startWriter,
  tempDir,
  rotatedFiles,
  readOutputFiles,
  readRecordsNow,
  Tailer,
  eachLine,
  runSync,
  inState,
  batches,
  waitForChildState,
  lineServer,
  natsJetStream,
  readStream,
  streamMessages,
}
