// The data every part uses: the generated documents inserted into MongoDB (`docs`, and the first
// --stream-docs of them in `stream_docs`), pre-serialised `_bulk` bodies of them (no _index:
// POSTed to /<index>/_bulk) for the raw load limit, and the stream documents' ids and sources.
'use strict'

const { generate, averageBsonSize, isBigInt64 } = require('../dataset')
const { toEsDoc } = require('../lib/to-json')
const { withTimeout } = require('../lib/util')

/** Inserts the dataset; fills run.ndjsonBatches, run.streamIds and run.streamSources. */
async function insertDataset(run) {
  const { opts, seed, db } = run
  const docs = db.collection('docs')
  const streamDocs = db.collection('stream_docs')
  run.ndjsonBatches = []
  run.streamIds = []
  run.streamSources = new Map()
  let batch = []
  let lines = []
  let json = 0
  let big = 0
  let i = 0
  const flush = async () => {
    await docs.insertMany(batch, { ordered: false })
    // The stream collection holds the first streamDocs documents of the same dataset.
    const take = Math.min(batch.length, opts.streamDocs - (i - batch.length))
    if (take > 0) await streamDocs.insertMany(batch.slice(0, take), { ordered: false })
    run.ndjsonBatches.push({ count: batch.length, body: Buffer.from(lines.join('')) })
    batch = []
    lines = []
  }
  for (const doc of generate(opts.docs, seed)) {
    i++
    if (isBigInt64(doc.seq64)) big++
    const { id, source } = toEsDoc(doc)
    const src = JSON.stringify(source)
    json += src.length
    lines.push(`{"index":{"_id":"${id}"}}\n${src}\n`)
    if (i <= opts.streamDocs) {
      run.streamIds.push(id)
      run.streamSources.set(id, source)
    }
    batch.push(doc)
    if (batch.length === 1000) await flush()
  }
  if (batch.length) await flush()
  const n = await docs.countDocuments()
  const ns = await streamDocs.countDocuments()
  if (n !== opts.docs || ns !== opts.streamDocs) throw new Error(`inserted ${n} (+${ns} stream) of ${opts.docs} (+${opts.streamDocs})`)
  const bson = averageBsonSize(Math.min(opts.docs, 2000), seed)
  return { docs: n, streamDocs: ns, seed, avgBsonBytes: bson, avgJsonBytes: Math.round(json / n), bigInt64Docs: big }
}

/** The dataset step: results.dataset, or an error that ends the run (no part can go without it). */
async function dataset(run) {
  const { opts } = run
  const result = await run.step(`generate and insert ${opts.docs} documents`, () => withTimeout(insertDataset(run), 60000 + opts.docs * 5, 'inserting the dataset'))
  if (result.error) throw new Error(`no dataset: ${result.error}`)
  return result
}

module.exports = { dataset }
