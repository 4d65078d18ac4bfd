// Part 2 (--only copy), initial copy: each tool in its own process (tools/): this engine, a plain
// Node script with the official clients, mongo2elastic (needs Redis). Throughput into the index,
// CPU seconds and peak RSS of that process alone, and the share of the raw limit reached.
'use strict'

const { runCopy } = require('../lib/run-copy')
const { countDocs, deleteIndex } = require('../lib/es')
const { redisProblem } = require('../lib/redis')
const { round } = require('../lib/util')
const { ENGINE_VARIANTS } = require('../lib/options')

/** results.copy; `limits` is results.limits (for each tool's share of min(read, load)). */
async function copy(run, limits) {
  const { runId, dbName, step } = run
  const copy = {}
  const common = { mode: 'copy', mongoUrl: run.mongoUrl, esUrl: run.esUrl, namespace: `${dbName}.docs` }
  const counter = (index) => () => countDocs(run.esUrl, index).finally(() => deleteIndex(run.esUrl, index))
  // One engine run per --engine-variants entry that changes the copy (flushIntervalMs only matters while streaming).
  const variants = run.opts.engineVariants.filter((v) => v !== 'flush100')
  for (const [i, v] of (variants.length ? variants : ['default']).entries()) {
    const label = v === 'default' ? 'engine' : `engine (batch.${v.replace('-', ' ')})`
    const index = `bench-${runId}-copy-engine${i || ''}`
    const config = { ...common, index, name: `bench-${runId}-copy${i || ''}`, checkpointDb: dbName, addonPath: run.addonDir, batch: ENGINE_VARIANTS[v] }
    copy[label] = await step(`copy: ${label}`, () => runCopy(run, label.replace(/[()]/g, ''), 'engine.js', config, { countIndexed: counter(index) }))
  }
  let index = `bench-${runId}-copy-node`
  copy['node script'] = await step('copy: node script', () => runCopy(run, 'node script', 'node-script.js', { ...common, index }, { countIndexed: counter(index) }))
  if (run.opts.skipM2e) copy.mongo2elastic = { skipped: '--skip-mongo2elastic' }
  else {
    const why = await redisProblem()
    index = `bench-${runId}-copy-m2e`
    copy.mongo2elastic = why
      ? { skipped: `not run: ${why}` }
      : await step('copy: mongo2elastic', () =>
          runCopy(run, 'mongo2elastic', 'mongo2elastic.js', { ...common, index, uniqueId: `bench-${runId}-copy` }, { countIndexed: counter(index) }),
        )
  }
  for (const x of Object.values(copy)) if (x && x.docsPerSec && limits.min) x.ofLimit = round(x.docsPerSec / limits.min, 3)
  return copy
}

module.exports = { copy }
