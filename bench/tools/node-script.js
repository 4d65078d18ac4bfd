// Tool runner: the straightforward Node script a competent developer would write with the
// official `mongodb` driver and `@elastic/elasticsearch` client.
// copy: cursor → batches of 1000 → `_bulk`, one request at a time.
// stream: change stream opened before the copy (so nothing is missed), then events are written
// as they come: one `_bulk` in flight, everything that arrived meanwhile goes in the next one
// (at most 500), so a quiet stream writes each event at once and a busy one batches.
'use strict'

const { MongoClient } = require('mongodb')
const { makeClient } = require('../lib/es-client')
const { toEsDoc } = require('../lib/to-json')
const { config, send, fail, loaded, onStop } = require('../lib/child')

const COPY_BATCH = 1000
const STREAM_BATCH = 500

async function main() {
  const counters = { batches: 0, indexed: 0, failed: 0, events: 0, bulkMs: 0 }
  const notes = []
  // Each stream `_bulk` request's time (ms), so the harness can tell the search server's stalls per pass.
  const batchMs = []
  let streaming = false
  await loaded()
  const t0 = performance.now()
  const mongo = await MongoClient.connect(config.mongoUrl)
  const [dbName, collName] = splitNamespace(config.namespace)
  const coll = mongo.db(dbName).collection(collName)
  const es = makeClient(config.esUrl)
  if (!(await es.indices.exists({ index: config.index }))) await es.indices.create({ index: config.index })

  async function bulk(operations) {
    const t = performance.now()
    const res = await es.bulk({ operations })
    counters.bulkMs += performance.now() - t
    if (streaming && batchMs.length < 100000) batchMs.push(performance.now() - t)
    if (!counters.batches) counters.firstBatchMs = performance.now() - t0
    counters.batches++
    for (const item of res.items) {
      const r = item.index || item.delete
      if (r.error) {
        counters.failed++
        if (notes.length < 5) notes.push(`${r._id}: ${r.error.type}: ${r.error.reason}`)
      } else counters.indexed++
    }
  }

  let stream = null
  let buffered = []
  if (config.mode === 'stream') {
    stream = coll.watch([], { fullDocument: 'updateLookup' })
    // Opens the stream (and fixes its start point) before the copy; keep anything it returns.
    const first = await stream.tryNext()
    if (first) buffered.push(first)
  }

  // Copy.
  let batch = []
  let copied = 0
  const writeCopyBatch = async (docs) => {
    const ops = []
    for (const d of docs) {
      const { id, source } = toEsDoc(d)
      ops.push({ index: { _index: config.index, _id: id } }, source)
    }
    await bulk(ops)
    copied += docs.length
  }
  for await (const doc of coll.find({}, { batchSize: COPY_BATCH })) {
    batch.push(doc)
    if (batch.length === COPY_BATCH) {
      await writeCopyBatch(batch)
      batch = []
    }
  }
  if (batch.length) await writeCopyBatch(batch)
  const copyMs = performance.now() - t0

  if (config.mode === 'copy') {
    onStop(() => mongo.close())
    send('copied', { ms: copyMs, docs: copied, counters, notes })
    return
  }

  // Stream.
  const pending = buffered
  buffered = null
  let running = false
  let idle = Promise.resolve()
  const pump = () => {
    if (running) return
    running = true
    idle = (async () => {
      try {
        while (pending.length) {
          const events = pending.splice(0, STREAM_BATCH)
          const ops = []
          for (const ev of events) {
            const id = toEsDoc({ _id: ev.documentKey._id }).id
            if (ev.fullDocument) ops.push({ index: { _index: config.index, _id: id } }, toEsDoc(ev.fullDocument).source)
            else if (ev.operationType === 'delete' || ev.operationType === 'update') ops.push({ delete: { _index: config.index, _id: id } })
          }
          counters.events += events.length
          if (ops.length) await bulk(ops)
        }
      } finally {
        running = false
      }
    })().catch(fail)
  }
  let stopping = false
  onStop(async () => {
    stopping = true
    await stream.close()
    await idle
    await mongo.close()
  })
  streaming = true
  send('streaming', { copyMs, docs: copied, counters, notes })
  process.on('message', (m) => m && m.type === 'counters' && send('counters', { counters, notes, batchMs }))
  pump()
  try {
    for await (const ev of stream) {
      if (!['insert', 'update', 'replace', 'delete'].includes(ev.operationType)) continue
      pending.push(ev)
      pump()
      // Backpressure: do not read ahead without bound while Elasticsearch is slow.
      while (pending.length > 10 * STREAM_BATCH) await idle
    }
  } catch (e) {
    if (!stopping) throw e
  }
}

function splitNamespace(ns) {
  const i = ns.indexOf('.')
  return [ns.slice(0, i), ns.slice(i + 1)]
}

main().catch(fail)
