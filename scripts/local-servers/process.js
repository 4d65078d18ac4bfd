// The server processes: free ports, spawning with a log file, telling ours from a recycled PID,
// killing (children and processes of an earlier run), killing our children when this process
// ends, and sweeping the run directories of processes that died without cleaning up.
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const net = require('node:net')
const { spawn } = require('node:child_process')
const { HOST, RUN_ROOT, sleep } = require('./common')

const KILL_GRACE_MS = 3_000

function pidAlive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch (e) {
    if (e.code === 'ESRCH') return false
    // EPERM: exists but not ours
  }
  // A zombie still answers kill(0); treat it as dead.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    if (state === 'Z' || state === 'X') return false
  } catch {
    // no /proc: trust kill(0)
  }
  return true
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ')
  } catch {
    return null
  }
}

/**
 * True only when `pid` is alive and its command line still looks like the server we started
 * (guards against killing a recycled PID).
 */
function isOurServer(pid, kind, port) {
  if (!pidAlive(pid)) return false
  const cl = cmdline(pid)
  if (cl == null) return false
  if (kind === 'mongo') {
    if (!cl.includes('secantusd')) return false
    return port ? cl.includes(`--port ${port}`) : true
  }
  if (kind === 'es') {
    if (!cl.includes('osmem')) return false
    return port ? cl.includes(`${HOST}:${port}`) : true
  }
  return cl.includes('secantusd') || cl.includes('osmem')
}

function trySignal(pid, sig) {
  try {
    process.kill(pid, sig)
    return true
  } catch {
    return false
  }
}

/** Kills a PID that is not (or no longer) a child of this process: SIGTERM, SIGKILL after grace. */
async function killPid(pid, kind, port) {
  if (!isOurServer(pid, kind, port)) return
  trySignal(pid, 'SIGTERM')
  const deadline = Date.now() + KILL_GRACE_MS
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return
    await sleep(50)
  }
  if (pidAlive(pid)) trySignal(pid, 'SIGKILL')
  const hard = Date.now() + 5_000
  while (pidAlive(pid) && Date.now() < hard) await sleep(50)
}

function childExited(child) {
  return child.exitCode !== null || child.signalCode !== null
}

function waitChildExit(child, ms) {
  if (childExited(child)) return Promise.resolve(true)
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.removeListener('exit', onExit)
      resolve(false)
    }, ms)
    function onExit() {
      clearTimeout(t)
      resolve(true)
    }
    child.once('exit', onExit)
  })
}

/** Kills one of our own children: SIGTERM, SIGKILL after the grace time, waits for its exit. */
async function killChild(child, graceMs = KILL_GRACE_MS) {
  if (!child || childExited(child)) return
  child.kill('SIGTERM')
  if (await waitChildExit(child, graceMs)) return
  child.kill('SIGKILL')
  await waitChildExit(child, 10_000)
}

// ---------------------------------------------------------------------------
// What dies with this process

// Children started in library mode; SIGKILLed when this node process exits.
const liveChildren = new Set()
const liveDirs = new Set() // run dirs of library-mode handles not yet stopped
let exitHookInstalled = false

function killAllSync() {
  for (const child of liveChildren) {
    if (!childExited(child)) {
      try {
        child.kill('SIGKILL')
      } catch {
        // ignore
      }
    }
  }
  liveChildren.clear()
  for (const dir of liveDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
    } catch {
      // best effort; sweepStale() removes leftovers later
    }
  }
  liveDirs.clear()
}

function installExitHook() {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', killAllSync)
  // A termination signal normally ends node without running 'exit' hooks. Kill our servers,
  // then, if nobody else handles the signal, die from it as node would have.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    const handler = () => {
      killAllSync()
      process.removeListener(sig, handler)
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
    }
    process.on(sig, handler)
  }
}

/** A run directory removed when this process exits (unless `forgetDir` said it is gone). */
function removeDirAtExit(dir) {
  installExitHook()
  liveDirs.add(dir)
}

function forgetDir(dir) {
  liveDirs.delete(dir)
}

function track(child) {
  installExitHook()
  liveChildren.add(child)
  child.once('exit', () => liveChildren.delete(child))
}

/**
 * Spawns `cmd` with its output appended to `logFile`. A child that is not `detached` is killed
 * when this process exits. Never keeps the event loop alive just because a server runs: a test
 * that forgets stop() still exits, and the 'exit' hook then kills the servers.
 */
function spawnLogged(cmd, args, { cwd, logFile, detached }) {
  const fd = fs.openSync(logFile, 'a')
  let child
  try {
    child = spawn(cmd, args, { cwd, stdio: ['ignore', fd, fd], detached, env: process.env })
  } finally {
    fs.closeSync(fd)
  }
  child.on('error', () => {}) // surfaced through the readiness check
  child.unref()
  if (!detached) track(child)
  return child
}

// ---------------------------------------------------------------------------
// Ports

function listenEphemeral() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen({ port: 0, host: HOST, exclusive: true }, () => resolve(srv))
  })
}

async function freePorts(n) {
  const servers = []
  try {
    for (let i = 0; i < n; i++) servers.push(await listenEphemeral())
    return servers.map((s) => s.address().port)
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r()))))
  }
}

// ---------------------------------------------------------------------------
// Run directories: <RUN_ROOT>/<label>-<pid>-<hex>/pids.json

/** Records the PIDs and ports of a run, so that a sweep can find them if this process dies. */
function writePids(srv) {
  const data = {
    owner: srv.detached ? null : process.pid,
    mongo: srv.children.mongo ? srv.children.mongo.pid : null,
    es: srv.children.es ? srv.children.es.pid : null,
    mongoPort: srv.mongoPort,
    esPort: srv.esPort,
  }
  fs.writeFileSync(path.join(srv.dir, 'pids.json'), `${JSON.stringify(data, null, 2)}\n`)
}

/** A run dir without pids.json: a start in progress, or one that failed. Removed only if clearly old. */
function sweepUnrecorded(dir, name) {
  const m = /-(\d+)-[0-9a-f]+$/.exec(name)
  try {
    if (m && !pidAlive(Number(m[1])) && Date.now() - fs.statSync(dir).mtimeMs > 10 * 60_000) {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  } catch {
    // ignore
  }
}

/**
 * Removes run dirs left behind by library users that died without cleaning up (owner PID gone),
 * killing their servers if still running. Never touches CLI-started (owner null) dirs.
 */
async function sweepStale() {
  let entries
  try {
    entries = fs.readdirSync(RUN_ROOT)
  } catch {
    return
  }
  for (const name of entries) {
    const dir = path.join(RUN_ROOT, name)
    let info
    try {
      info = JSON.parse(fs.readFileSync(path.join(dir, 'pids.json'), 'utf8'))
    } catch {
      sweepUnrecorded(dir, name)
      continue
    }
    if (!Number.isInteger(info.owner) || pidAlive(info.owner)) continue
    if (info.mongo) await killPid(info.mongo, 'mongo', info.mongoPort)
    if (info.es) await killPid(info.es, 'es', info.esPort)
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

module.exports = {
  KILL_GRACE_MS,
  pidAlive,
  isOurServer,
  killPid,
  childExited,
  killChild,
  removeDirAtExit,
  forgetDir,
  spawnLogged,
  freePorts,
  writePids,
  sweepStale,
}
