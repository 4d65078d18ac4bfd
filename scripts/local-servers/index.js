// The local servers as a library: start a SecantusDB and an osmem-server on free ports of
// 127.0.0.1 (or use MONGO_URL / ES_URL), restart or stop one of them, stop both. The parts:
// venv.js (install), process.js (spawn, kill, sweep), ready.js (readiness checks).
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { HOST, REPLICA_SET, RUN_ROOT } = require('./common')
const { VENV, PINS, SECANTUSD, ensureVenv, osmemBinary } = require('./venv')
const proc = require('./process')
const { waitReady, fileSize } = require('./ready')

const RESTART_GRACE_MS = 15_000
const LOGS = { mongo: 'secantusdb.log', es: 'osmem.log' }

/** The command line of server `kind` of the run `srv`. */
function commandOf(kind, srv) {
  if (kind === 'es') return { cmd: osmemBinary(), args: ['-addr', `${HOST}:${srv.esPort}`, '-no-stdin-watch'] }
  const data = path.join(srv.dir, 'mongo-data')
  fs.mkdirSync(data, { recursive: true })
  const config = path.join(srv.dir, 'secantusd.toml')
  if (!fs.existsSync(config)) fs.writeFileSync(config, '# empty: keeps secantusd from auto-discovering a config\n')
  return { cmd: SECANTUSD, args: ['--config', config, '--host', HOST, '--port', String(srv.mongoPort), '--storage-path', data] }
}

async function startOne(kind, srv) {
  const logFile = path.join(srv.dir, LOGS[kind])
  const logOffset = fileSize(logFile)
  const { cmd, args } = commandOf(kind, srv)
  const child = proc.spawnLogged(cmd, args, { cwd: srv.dir, logFile, detached: srv.detached })
  srv.children[kind] = child
  srv.pids[kind] = child.pid
  proc.writePids(srv) // record at once so a sweep can find it even if we die while waiting
  try {
    await waitReady(kind, kind === 'mongo' ? srv.mongoPort : srv.esPort, { child, logFile, logOffset })
  } catch (e) {
    await proc.killChild(child)
    srv.children[kind] = null
    srv.pids[kind] = null
    throw e
  }
  proc.writePids(srv)
}

async function stopOne(kind, srv, graceMs = proc.KILL_GRACE_MS) {
  const child = srv.children[kind]
  if (!child) return
  await proc.killChild(child, graceMs)
  srv.children[kind] = null
  srv.pids[kind] = null
  if (fs.existsSync(srv.dir)) proc.writePids(srv)
}

const STATE = Symbol('localServersState')

/** A new run directory, removed when this process exits unless the servers outlive it. */
function newRunDir(name, detached) {
  const label = String(name || 'servers').replace(/[^A-Za-z0-9._-]/g, '_')
  const dir = path.join(RUN_ROOT, `${label}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`)
  fs.mkdirSync(dir, { recursive: true })
  if (!detached) proc.removeDirAtExit(dir)
  return dir
}

/**
 * Starts the servers (or reuses MONGO_URL / ES_URL unless `ignoreEnv`); resolves with a handle:
 * { mongoUrl, esUrl, started, dir, pids, stop() }. `detached` servers outlive this process.
 */
async function startServers({ name, detached = false, ignoreEnv = false } = {}) {
  const envMongo = ignoreEnv ? undefined : process.env.MONGO_URL
  const envEs = ignoreEnv ? undefined : process.env.ES_URL
  if (envMongo && envEs) {
    return { mongoUrl: envMongo, esUrl: envEs, started: false, stop: async () => {} }
  }
  ensureVenv()
  await proc.sweepStale().catch(() => {})

  const dir = newRunDir(name, detached)
  const [mongoPort, esPort] = await proc.freePorts(2)
  const srv = {
    dir,
    detached,
    wantMongo: !envMongo,
    wantEs: !envEs,
    mongoPort: envMongo ? null : mongoPort,
    esPort: envEs ? null : esPort,
    children: { mongo: null, es: null },
    pids: { mongo: null, es: null },
    stopped: false,
  }

  const handle = {
    mongoUrl: envMongo || `mongodb://${HOST}:${mongoPort}/?replicaSet=${REPLICA_SET}`,
    esUrl: envEs || `http://${HOST}:${esPort}`,
    started: true,
    dir,
    pids: srv.pids,
    stop: async () => {
      if (srv.stopped) return
      srv.stopped = true
      await Promise.all([stopOne('mongo', srv), stopOne('es', srv)])
      fs.rmSync(dir, { recursive: true, force: true })
      proc.forgetDir(dir)
    },
  }
  Object.defineProperty(handle, STATE, { value: srv, enumerable: false })

  try {
    // Start both in parallel; osmem is quick, SecantusDB takes a few seconds.
    const results = await Promise.allSettled([srv.wantMongo ? startOne('mongo', srv) : null, srv.wantEs ? startOne('es', srv) : null])
    const failed = results.find((r) => r.status === 'rejected')
    if (failed) throw failed.reason
  } catch (e) {
    await handle.stop().catch(() => {})
    throw e
  }
  return handle
}

function stateOf(handle, kind) {
  const srv = handle && handle[STATE]
  if (!srv) throw new Error('not a handle returned by startServers() that started servers')
  if (kind === 'mongo' && !srv.wantMongo) throw new Error('SecantusDB was not started here (MONGO_URL is set)')
  if (kind === 'es' && !srv.wantEs) throw new Error('osmem was not started here (ES_URL is set)')
  if (srv.stopped) throw new Error('servers already stopped')
  return srv
}

/** Stops only SecantusDB and starts it again on the same port with the same data. */
async function restartMongo(handle) {
  const srv = stateOf(handle, 'mongo')
  // SecantusDB's clean shutdown joins its accept thread (~2 s) and then drains open
  // connections (up to 5 s) before closing WiredTiger. Data must survive here, so give it
  // longer than stop()'s 3 s before resorting to SIGKILL.
  await stopOne('mongo', srv, RESTART_GRACE_MS)
  await startOne('mongo', srv)
}

/** Stops osmem (its port stays reserved by nobody; its data is lost). */
async function stopEs(handle) {
  const srv = stateOf(handle, 'es')
  await stopOne('es', srv)
}

/** Starts osmem again on the same port (no-op if it is running). */
async function startEs(handle) {
  const srv = stateOf(handle, 'es')
  if (srv.children.es && !proc.childExited(srv.children.es)) return
  await startOne('es', srv)
}

module.exports = { ensureVenv, startServers, restartMongo, stopEs, startEs, VENV, PINS }
