// Part 2 (--only copy), initial copy: each tool in its own process (tools/): this engine, a plain
// Node script with the official clients, mongo2elastic (needs Redis). Throughput into the index,
// CPU seconds and peak RSS of that process alone, and the share of the raw limit reached.
'use strict'

const { runCopy } = require('../lib/run-copy')
const { countDocs, deleteIndex } = require('../lib/es')
const { redisProblem } = require('../lib/redis')
const { round } = require('../lib/util')

/** results.copy; `limits` is results.limits (for each tool's share of min(read, load)). */
async function copy(run, limits) {
  const { runId, dbName, step } = run
  const copy = {}
  const common = { mode: 'copy', mongoUrl: run.mongoUrl, esUrl: run.esUrl, namespace: `${dbName}.docs` }
  const counter = (index) => () => countDocs(run.esUrl, index).finally(() => deleteIndex(run.esUrl, index))
  let index = `bench-${runId}-copy-engine`
  copy.engine = await step('copy: engine', () =>
    runCopy(run, 'engine', 'engine.js', { ...common, index, name: `bench-${runId}-copy`, checkpointDb: dbName, addonPath: run.addonDir }, { countIndexed: counter(index) }),
  )
  index = `bench-${runId}-copy-node`
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
