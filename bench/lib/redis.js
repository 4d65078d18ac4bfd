// mongo2elastic keeps its state in Redis at 127.0.0.1:6379: whether it can run, and removing the
// keys of this run afterwards.
'use strict'

const { withTimeout } = require('./util')

const connectOptions = (connectTimeout) => ({ host: '127.0.0.1', port: 6379, lazyConnect: true, connectTimeout, maxRetriesPerRequest: 0, retryStrategy: () => null })

/** Why mongo2elastic cannot run here, or null when Redis answers. */
async function redisProblem() {
  const Redis = require('ioredis')
  const r = new Redis(connectOptions(3000))
  try {
    await withTimeout(r.connect().then(() => r.ping()), 5000, 'redis ping')
    return null
  } catch (e) {
    return `Redis at 127.0.0.1:6379 unreachable (${e.message}); mongo2elastic keeps its state there`
  } finally {
    r.disconnect()
  }
}

/** Removes mongo2elastic's Redis keys of this run (its runner deletes them on a clean stop). */
async function cleanRedis(runId) {
  let Redis
  try {
    Redis = require('ioredis')
  } catch {
    return
  }
  const r = new Redis(connectOptions(2000))
  try {
    await r.connect()
    let cursor = '0'
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `mongoChangeStream:*:bench-${runId}-*`, 'COUNT', 1000)
      if (keys.length) await r.del(...keys)
      cursor = next
    } while (cursor !== '0')
  } finally {
    r.disconnect()
  }
}

module.exports = { redisProblem, cleanRedis }
