// A short soak (SOAK_TEST_MINUTES, default 2.5) of scripts/soak.js: the sync in its own process
// under mixed inserts, updates, deletes and collection creations and drops; memory, open file
// descriptors, connections, threads and runtime tasks sampled every 10 s must not trend upwards after the
// warm-up, and every index must equal its collection at the end. `npm run soak` is the long run.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { serversFor } = require('./helpers.js')
const { runSoak, slope } = require('../scripts/soak.js')

const MINUTES = Number(process.env.SOAK_TEST_MINUTES || 2.5)

describe('soak', () => {
  const ctx = serversFor('soak')

  test('the least-squares slope is that of the samples', () => {
    assert.equal(slope([0, 1, 2, 3], [5, 7, 9, 11]), 2)
    assert.equal(slope([0, 1, 2], [4, 4, 4]), 0)
    assert.ok(Math.abs(slope([0, 1, 2, 3], [1, 3, 2, 4]) - 0.8) < 1e-9)
  })

  test(`${MINUTES} minutes of mixed load: no growth after the warm-up, the indexes equal the collections`, { timeout: (MINUTES + 6) * 60000 }, async () => {
    // A short run has few samples after its warm-up, so one step (a pooled connection opened
    // under load, an allocator or V8 heap step) weighs more than over an hour: the bounds are
    // looser here, yet under what a leak per collection created (one every 20 s: 3 a minute)
    // would give.
    const bounds = { rssBytesPerMin: 4 * 1024 * 1024, fds: 1.5, connections: 1.5, threads: 0.5, tasks: 1.5 }
    const report = await runSoak({ mongo: ctx.mongo, mongoUrl: ctx.mongoUrl, esUrl: ctx.esUrl, minutes: MINUTES, opsPerSec: 40, rotateEverySec: 20, warmupFraction: 0.4, bounds })
    assert.ok(report.ok, `soak (seed ${report.seed}) failed: ${report.problems.join('; ')}\n${JSON.stringify(report)}`)
    assert.ok(report.load.ops > 0 && report.load.created >= 3, `a load was applied: ${JSON.stringify(report.load)}`)
    assert.ok(report.samples >= 6, `sampled every 10 s (${report.samples} samples)`)
  })
})
