// Tool runner: mongo2elastic 0.58.0 (npm), used as its README shows. State lives in Redis at
// 127.0.0.1:6379 under a key prefix unique to this run (`uniqueId`), deleted on stop.
// copy: createIndexIgnoreMalformed, runInitialScan({ batchSize: 1000 }), wait for
//       `initialScanComplete`.
// stream: processChangeStream() with its defaults (batches of 500 events or 30 s), started
//         before the initial scan as in its README; ready once the scan completed.
'use strict'

const { MongoClient } = require('mongodb')
const Redis = require('ioredis')
const { makeClient } = require('../lib/es-client')
const { config, send, fail, loaded, onStop } = require('../lib/child')

async function main() {
  const { initSync } = await import('mongo2elastic')
  const counters = { batches: 0, indexed: 0, failed: 0, processErrors: 0 }
  const notes = []
  const note = (s) => notes.length < 5 && notes.push(s)
  await loaded()
  const t0 = performance.now()
  const redis = new Redis({ host: '127.0.0.1', port: 6379, maxRetriesPerRequest: 3, connectTimeout: 5000 })
  const mongo = await MongoClient.connect(config.mongoUrl)
  const [dbName, collName] = splitNamespace(config.namespace)
  const coll = mongo.db(dbName).collection(collName)
  const es = makeClient(config.esUrl)

  const sync = initSync(redis, coll, es, { index: config.index, uniqueId: config.uniqueId })
  sync.emitter.on('process', (e) => {
    counters.batches++
    counters.indexed += e.success || 0
    counters.failed += e.fail || 0
    if (e.errors) for (const item of e.errors.slice(0, 2)) note(JSON.stringify(item).slice(0, 300))
  })
  sync.emitter.on('processError', (e) => {
    counters.processErrors++
    note(`processError ${e.name}: ${e.error && e.error.message}`)
  })
  sync.emitter.on('cursorError', (e) => fail(new Error(`mongo2elastic cursorError (${e.name}): ${e.error && e.error.message}`)))
  const scanComplete = new Promise((r) => sync.emitter.once('initialScanComplete', r))

  let changeStream = null
  let scan = null
  onStop(async () => {
    if (changeStream) await changeStream.stop()
    if (scan) await scan.stop()
    await sync.reset() // remove this run's Redis keys
    redis.disconnect()
    await mongo.close()
  })

  await sync.createIndexIgnoreMalformed().catch((e) => note(`createIndexIgnoreMalformed: ${e.message}`))
  if (config.mode === 'stream') {
    changeStream = await sync.processChangeStream()
    changeStream.start().catch(fail)
  }
  scan = await sync.runInitialScan({ batchSize: 1000 })
  scan.start().catch(fail)
  await scanComplete
  const copyMs = performance.now() - t0
  if (config.mode === 'copy') {
    send('copied', { ms: copyMs, docs: counters.indexed + counters.failed, counters, notes })
    return
  }
  send('streaming', { copyMs, docs: counters.indexed + counters.failed, counters, notes })
  process.on('message', (m) => m && m.type === 'counters' && send('counters', { counters, notes }))
}

function splitNamespace(ns) {
  const i = ns.indexOf('.')
  return [ns.slice(0, i), ns.slice(i + 1)]
}

main().catch(fail)
