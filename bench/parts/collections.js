// Part 5 (--only collections), many collections: the engine following 40 collections in stream
// mode, into a file output, with its default MongoDB pool and with maxPoolSize=10; one insert at a
// time, each timed until its record is in the file (lib/many-collections.js). Then a thousand
// collections of one database, with a stream per collection and with one for the database
// (lib/thousand-collections.js): connections, memory, time to start, latency of one change.
'use strict'

const { measureManyCollections } = require('../lib/many-collections')
const { measureThousandCollections } = require('../lib/thousand-collections')
const { withTimeout } = require('../lib/util')

/** results.collections */
async function collections(run) {
  const { addonDir, mongoUrl, db, dbName, runId } = run
  const { log } = require('../lib/util')
  // --thousand-database: the database-stream variant of the 1,000 collections alone.
  if (run.opts.thousandDatabase) {
    const thousand = await run.step('a thousand collections: one stream for the database', () =>
      withTimeout(measureThousandCollections({ addonPath: addonDir, mongoUrl, db, checkpointDb: dbName, runId, onlyDefault: true, log, collections: run.opts.thousandCollections }), 900000, 'a thousand collections'),
    )
    return { thousand }
  }
  const many = await run.step('many collections: one change among 40 followed collections, default pool vs maxPoolSize=10', () =>
    withTimeout(measureManyCollections({ addonPath: addonDir, mongoUrl, db, checkpointDb: dbName, runId }), 300000, 'many collections'),
  )
  const thousand = await run.step('a thousand collections: a stream per collection vs one for the database', () =>
    withTimeout(measureThousandCollections({ addonPath: addonDir, mongoUrl, db, checkpointDb: dbName, runId }), 900000, 'a thousand collections'),
  )
  return { ...many, thousand }
}

module.exports = { collections }
