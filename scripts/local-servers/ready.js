// Readiness: a server is ready when it answers as a client needs it. SecantusDB: its log says it
// listens and, asked `hello` through the MongoDB driver, it is the writable primary of our replica
// set (what a driver with ?replicaSet=secantus needs). osmem: `GET /` answers 200 with JSON.
'use strict'

const fs = require('node:fs')
const http = require('node:http')
const { HOST, REPLICA_SET, sleep } = require('./common')
const { childExited } = require('./process')

const READY_TIMEOUT_MS = 60_000

function readTail(file, lines = 40) {
  try {
    const text = fs.readFileSync(file, 'utf8')
    return text.split('\n').slice(-lines - 1).join('\n').trimEnd()
  } catch {
    return '(no log)'
  }
}

/** What `file` holds past `offset` (what a server logged since it was started this time). */
function readFrom(file, offset) {
  try {
    const fd = fs.openSync(file, 'r')
    try {
      const size = fs.fstatSync(fd).size
      if (size <= offset) return ''
      const buf = Buffer.alloc(size - offset)
      fs.readSync(fd, buf, 0, buf.length, offset)
      return buf.toString('utf8')
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    return ''
  }
}

function fileSize(file) {
  try {
    return fs.statSync(file).size
  } catch {
    return 0
  }
}

function httpGetJson(url, timeoutMs = 2_000) {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => {
        if (res.statusCode !== 200) return resolve(null)
        try {
          resolve(JSON.parse(body))
        } catch {
          resolve(null)
        }
      })
    })
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(null))
  })
}

/** The driver, required when first needed: `install`, `stop` and `status` work before `npm install`. */
function mongodb() {
  try {
    return require('mongodb')
  } catch (e) {
    throw new Error(`the readiness check of SecantusDB uses the mongodb package (a devDependency): run npm install first (${e.message.split('\n')[0]})`)
  }
}

/** True when the node on `port` reports itself writable primary of our replica set. */
async function mongoIsPrimary(port, timeoutMs = 2_000) {
  const { MongoClient } = mongodb()
  const client = new MongoClient(`mongodb://${HOST}:${port}/?directConnection=true`, {
    serverSelectionTimeoutMS: timeoutMs,
    connectTimeoutMS: timeoutMs,
    socketTimeoutMS: timeoutMs,
  })
  try {
    const hello = await client.db('admin').command({ hello: 1 })
    return (hello.isWritablePrimary ?? hello.ismaster) === true && hello.setName === REPLICA_SET
  } catch {
    return false
  } finally {
    await client.close().catch(() => {})
  }
}

/** Whether the server answers yet (`logText` is what it logged since it was started). */
async function answers(kind, port, logText) {
  if (kind === 'mongo') return logText().includes(`listening on ${HOST}:${port}`) && (await mongoIsPrimary(port))
  const j = await httpGetJson(`http://${HOST}:${port}/`)
  return Boolean(j && typeof j === 'object')
}

/**
 * Waits until the server `spawned` ({ child, logFile, logOffset }) of `kind` on `port` is ready;
 * fails with the tail of its log if it exits or is not ready within a minute.
 */
async function waitReady(kind, port, spawned) {
  const { child, logFile, logOffset } = spawned
  const deadline = Date.now() + READY_TIMEOUT_MS
  const label = kind === 'mongo' ? `SecantusDB on ${HOST}:${port}` : `osmem on ${HOST}:${port}`
  let spawnErr = null
  child.once('error', (e) => (spawnErr = e))
  for (;;) {
    if (spawnErr || childExited(child)) {
      const why = spawnErr ? spawnErr.message : `exited with ${child.exitCode ?? child.signalCode}`
      throw new Error(`${label} failed to start (${why}). Log ${logFile}:\n${readTail(logFile)}`)
    }
    if ((await answers(kind, port, () => readFrom(logFile, logOffset))) && !childExited(child)) return
    if (Date.now() > deadline) {
      throw new Error(`${label} not ready after ${READY_TIMEOUT_MS / 1000}s. Log ${logFile}:\n${readTail(logFile)}`)
    }
    await sleep(100)
  }
}

module.exports = { waitReady, fileSize }
