// Part 5 (--only collections), many collections: the engine following 40 collections in stream
// mode, into a file output, with its default MongoDB pool and with maxPoolSize=10; one insert at a
// time, each timed until its record is in the file (lib/many-collections.js).
'use strict'

const { measureManyCollections } = require('../lib/many-collections')
const { withTimeout } = require('../lib/util')

/** results.collections */
function collections(run) {
  const { addonDir, mongoUrl, db, dbName, runId } = run
  return run.step('many collections: one change among 40 followed collections, default pool vs maxPoolSize=10', () =>
    withTimeout(measureManyCollections({ addonPath: addonDir, mongoUrl, db, checkpointDb: dbName, runId }), 300000, 'many collections'),
  )
}

module.exports = { collections }
