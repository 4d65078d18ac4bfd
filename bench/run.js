#!/usr/bin/env node
// Benchmark harness: raw limits, initial copy, engine overhead and stream latency of this engine
// against a plain Node script and mongo2elastic, on one generated dataset, in one run.
//
//   node bench/run.js [--docs N] [--only copy,overhead,stream,collections,search,filtered,postgres] [--skip-mongo2elastic] [--skip-transform]
//                     [--stream-docs N] [--updates N] [--seed N] [--verbose]
//                     [--rounds N] [--addon DIR] [--out NAME]
//
// --addon DIR runs the engine from another build (a directory holding index.js and the .node);
// --out NAME writes results/NAME.{json,md} instead of latest.
// Writes bench/results/latest.json and latest.md. Every wait is time-bounded; servers and child
// processes are stopped on errors and on Ctrl-C. Honours MONGO_URL / ES_URL (local servers
// otherwise). Only ever talks to 127.0.0.1 unless those point elsewhere.
//
// The parts, one module each in parts/: dataset (every part's data), limits and copy (--only
// copy), overhead (with the JS transform's cost), stream, collections, search (the search API's
// latency against a direct _search). lib/session.js holds the
// run (results, servers, steps, cleanup); lib/report.js renders the Markdown.
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { parseArgs } = require('./lib/options')
const { ensureDeps } = require('./lib/deps')
const { log, withTimeout, round, writeAtomic } = require('./lib/util')

const RESULTS = path.join(__dirname, 'results')

/** Runs the parts the options ask for, in order, each filling its key of the results. */
async function measure(run) {
  const { results, wants } = run
  const { dataset } = require('./parts/dataset')
  results.dataset = await dataset(run)
  run.N = results.dataset.docs
  run.copyTimeoutMs = 60000 + run.N * 10 // 100 docs/s at worst, then report what was reached
  if (wants('copy')) {
    results.limits = await require('./parts/limits').limits(run)
    results.copy = await require('./parts/copy').copy(run, results.limits)
  }
  if (wants('overhead')) results.overhead = await require('./parts/overhead').overhead(run)
  if (wants('stream')) results.stream = await require('./parts/stream').stream(run)
  if (wants('collections')) results.collections = await require('./parts/collections').collections(run)
  if (wants('search')) results.search = await require('./parts/search').search(run)
  if (run.opts.only?.has('filtered')) results.filtered = await require('./parts/filtered').filtered(run)
  if (run.opts.only?.has('postgres')) results.postgres = await require('./parts/postgres').postgres(run)
}

/** Writes results/<out>.json and .md and prints the Markdown. */
function report(run, started) {
  const { addonInfo } = require('./lib/addon-info')
  const { render } = require('./lib/report')
  const { results, opts } = run
  const addonNow = addonInfo(opts.addon)
  if (addonNow.builtAt !== results.addon.builtAt) results.addon.note = `rebuilt in the repo during the run (${addonNow.builtAt}); every engine run used the copy taken at the start`
  results.durationSec = round((performance.now() - started) / 1000)
  results.machine.loadAvgAtEnd = os.loadavg().map((v) => round(v, 2))
  fs.mkdirSync(RESULTS, { recursive: true })
  const md = render(results)
  writeAtomic(path.join(RESULTS, `${opts.out}.json`), `${JSON.stringify(results, null, 2)}\n`)
  writeAtomic(path.join(RESULTS, `${opts.out}.md`), `${md}\n`)
  process.stdout.write(`\n${md}\n`)
  log(`results: ${path.relative(process.cwd(), path.join(RESULTS, `${opts.out}.json`))}, ${opts.out}.md`)
  if (results.errors.length) process.exitCode = 1
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  if (opts.verbose) process.env.BENCH_VERBOSE = '1'
  const started = performance.now()
  ensureDeps()
  // Everything below needs the bench dependencies.
  const { newRun, cleanUpOnSignals, connect } = require('./lib/session')
  const run = newRun(opts)
  cleanUpOnSignals(run)
  try {
    await connect(run)
    await measure(run)
  } finally {
    await withTimeout(run.cleanup(), 30000, 'cleanup').catch((e) => log(e.message))
  }
  report(run, started)
}

main().catch((e) => {
  log(`bench failed: ${e.stack || e.message}`)
  process.exitCode = 1
})
