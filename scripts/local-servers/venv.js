// The Python virtual environment holding the pinned servers (<repo>/.local/venv, git-ignored):
// created once, by one process at a time (a lock directory, broken when its holder is dead).
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { spawnSync } = require('node:child_process')
const { ROOT, LOCAL, log } = require('./common')
const { pidAlive } = require('./process')

const VENV = path.join(LOCAL, 'venv')
const LOCK_DIR = path.join(LOCAL, 'venv.lock')
const PINS = ['secantusdb==0.7.0b3', 'osmem-server==0.1.6']
const PINS_HASH = crypto.createHash('sha256').update(PINS.join('\n')).digest('hex').slice(0, 16)
const MARKER = path.join(VENV, `.installed-${PINS_HASH}`)
const VENV_PY = path.join(VENV, 'bin', 'python')
const SECANTUSD = path.join(VENV, 'bin', 'secantusd-py')

const LOCK_WAIT_MS = 20 * 60_000
const LOCK_STALE_MS = 20 * 60_000

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

function venvReady() {
  return fs.existsSync(MARKER) && fs.existsSync(VENV_PY) && fs.existsSync(SECANTUSD)
}

/** True when the lock is held by a dead process, or for longer than any install takes. */
function lockIsStale() {
  const age = Date.now() - fs.statSync(LOCK_DIR).mtimeMs
  let owner = NaN
  try {
    owner = parseInt(fs.readFileSync(path.join(LOCK_DIR, 'owner'), 'utf8'), 10)
  } catch {
    // owner file not written yet
  }
  if (Number.isInteger(owner)) return !pidAlive(owner) || age > LOCK_STALE_MS
  return age > 30_000
}

function acquireLockSync() {
  fs.mkdirSync(LOCAL, { recursive: true })
  const start = Date.now()
  let announced = false
  for (;;) {
    try {
      fs.mkdirSync(LOCK_DIR)
      fs.writeFileSync(path.join(LOCK_DIR, 'owner'), String(process.pid))
      return
    } catch (e) {
      if (e.code !== 'EEXIST') throw e
    }
    // Someone holds it. Break it if the holder is dead or the lock is ancient.
    let stale
    try {
      stale = lockIsStale()
    } catch {
      continue // vanished: retry at once
    }
    if (stale) {
      fs.rmSync(LOCK_DIR, { recursive: true, force: true })
      continue
    }
    if (Date.now() - start > LOCK_WAIT_MS) {
      throw new Error(`timed out waiting for ${LOCK_DIR} (remove it if no install is running)`)
    }
    if (!announced) {
      log('waiting for another process installing the local servers…')
      announced = true
    }
    sleepSync(250)
  }
}

function releaseLockSync() {
  fs.rmSync(LOCK_DIR, { recursive: true, force: true })
}

function run(cmd, args, what) {
  // stdout of the child goes to our stderr so that `start`'s stdout stays machine-readable.
  const r = spawnSync(cmd, args, { stdio: ['ignore', 2, 2], cwd: ROOT })
  if (r.error) throw new Error(`${what}: cannot run ${cmd}: ${r.error.message}`)
  if (r.status !== 0) {
    throw new Error(`${what} failed (${cmd} ${args.join(' ')} exited ${r.status ?? r.signal})`)
  }
}

function createVenv() {
  if (fs.existsSync(VENV) && !fs.existsSync(VENV_PY)) {
    fs.rmSync(VENV, { recursive: true, force: true }) // half-made venv
  }
  if (fs.existsSync(VENV_PY)) return
  const py = process.env.PYTHON || 'python3'
  log(`creating ${path.relative(ROOT, VENV)} with ${py} -m venv`)
  try {
    run(py, ['-m', 'venv', VENV], 'python venv')
  } catch (e) {
    fs.rmSync(VENV, { recursive: true, force: true })
    throw new Error(`${e.message}\n(on Debian/Ubuntu the venv module may need: apt-get install python3-venv)`)
  }
}

function installPins() {
  log(`pip install ${PINS.join(' ')}`)
  run(VENV_PY, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...PINS], 'pip install')
  if (!fs.existsSync(SECANTUSD)) throw new Error(`install did not provide ${SECANTUSD}`)
  const bin = osmemBinary(true)
  if (!fs.existsSync(bin)) throw new Error(`install did not provide ${bin}`)
  for (const f of fs.readdirSync(VENV)) {
    if (f.startsWith('.installed-')) fs.rmSync(path.join(VENV, f), { force: true })
  }
  fs.writeFileSync(MARKER, `${PINS.join('\n')}\n`)
}

/**
 * Creates <repo>/.local/venv with the pinned servers. Synchronous (returns the venv path);
 * `await ensureVenv()` works too. Safe to call from several processes at once.
 */
function ensureVenv() {
  if (venvReady()) return VENV
  acquireLockSync()
  try {
    if (venvReady()) return VENV
    log('installing local servers (one time)…')
    createVenv()
    installPins()
    log('local servers installed')
    return VENV
  } finally {
    releaseLockSync()
  }
}

let osmemBinCache = null
/** The osmem-server binary the wheel ships (its path is asked from the package itself). */
function osmemBinary(refresh = false) {
  if (osmemBinCache && !refresh) return osmemBinCache
  const r = spawnSync(VENV_PY, ['-c', 'import osmem_server; print(osmem_server.resolve_binary())'], { encoding: 'utf8' })
  if (r.status !== 0) {
    throw new Error(`cannot locate the osmem-server binary: ${(r.stderr || r.error || '').toString().trim()}`)
  }
  osmemBinCache = r.stdout.trim()
  return osmemBinCache
}

module.exports = { VENV, PINS, SECANTUSD, ensureVenv, osmemBinary }
