// Tool runner: this engine (the napi addon), in its own process.
// copy mode: start, wait for the copy's `progress` event with `done: true`, report.
// stream mode: start, wait until it streams (copy done, state `streaming`), report; run until stopped.
'use strict'

const path = require('node:path')
const { config, send, fail, loaded, onStop } = require('../lib/child')

const { MongoElasticSync } = require(config.addonPath || path.resolve(__dirname, '../..'))

async function main() {
  const counters = { batches: 0, indexed: 0, conflicts: 0, deadLetters: 0, retries: 0, warnings: 0, bulkMs: 0 }
  // Each stream batch's time to acknowledgement (ms), so the harness can tell the search server's stalls per pass.
  const batchMs = []
  const notes = []
  const note = (s) => notes.length < 5 && notes.push(s)
  let resolveDone
  let resolveStreaming
  const copied = new Promise((r) => (resolveDone = r))
  const streaming = new Promise((r) => (resolveStreaming = r))

  const options = {
    name: config.name,
    mongo: { uri: config.mongoUrl },
    elasticsearch: { node: config.esUrl },
    collections: [{ namespace: config.namespace, index: config.index, ...(config.filter ? { filter: config.filter } : {}) }],
    checkpoint: { database: config.checkpointDb },
  }
  // `batch` options of the run's variant (bench --engine-variants), e.g. { adaptive: { enabled: true } }.
  if (config.batch) options.batch = { ...config.batch }
  if (config.flushIntervalMs != null) options.batch = { ...options.batch, flushIntervalMs: config.flushIntervalMs }
  let t0 = performance.now()
  const sync = new MongoElasticSync(options)
  // The cost of a JS transform hook: every document crosses into JS and back.
  if (config.transform) sync.setTransform((doc) => ({ ...doc, transformed: true }))
  sync.onEvent((e) => {
    switch (e.type) {
      case 'progress':
        if (e.done) resolveDone(e)
        break
      case 'state':
        if (e.state === 'streaming') resolveStreaming()
        if (e.state === 'failed') fail(new Error(`engine failed: ${e.error?.code} ${e.error?.message}`))
        break
      case 'batch':
        if (!counters.batches) counters.firstBatchMs = performance.now() - t0
        counters.batches++
        counters.indexed += e.indexed
        counters.conflicts += e.conflicts
        counters.deadLetters += e.deadLetters
        counters.bulkMs += e.tookMs // time Elasticsearch took to acknowledge, as the engine saw it
        if (e.phase === 'stream' && batchMs.length < 100000) batchMs.push(e.tookMs)
        break
      case 'deadLetter':
        note(`dead letter ${e.id}: ${e.reason}`)
        break
      case 'retry':
        counters.retries++
        note(`retry: ${e.cause}`)
        break
      case 'warning':
        counters.warnings++
        note(`warning: ${e.message}`)
        break
    }
  })
  onStop(async () => {
    await sync.stop()
  })

  await loaded()
  t0 = performance.now()
  await sync.start()
  sync.wait().catch(fail)
  const done = await copied
  const copyMs = performance.now() - t0
  if (config.mode === 'copy') {
    send('copied', { ms: copyMs, docs: done.copied, counters, notes, stats: sync.stats() })
    return
  }
  await streaming
  send('streaming', { copyMs, docs: done.copied, counters, notes })
  // Counters on request, so the harness can see what the stream did.
  process.on('message', (m) => m && m.type === 'counters' && send('counters', { counters, notes, stats: sync.stats(), batchMs }))
}

main().catch(fail)
