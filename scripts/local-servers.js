#!/usr/bin/env node
// Local test servers for mongo-elastic-sync.
//
//   SecantusDB  (PyPI secantusdb)     MongoDB wire protocol, single-node replica set "secantus"
//   osmem-server (PyPI osmem-server)  Elasticsearch/OpenSearch REST API (Go binary inside the wheel)
//
// Both are installed into <repo>/.local/venv (git-ignored) and only ever bind 127.0.0.1.
//
// Library use (tests):
//   const ls = require('./scripts/local-servers');
//   const h = await ls.startServers({ name: 'e2e' });   // honours MONGO_URL / ES_URL
//   ... h.mongoUrl, h.esUrl ...
//   await ls.restartMongo(h);                            // same port, same data
//   await ls.stopEs(h); await ls.startEs(h);             // ES outage (data may be lost)
//   await h.stop();
//
// CLI:
//   node scripts/local-servers.js install   # create the venv only
//   node scripts/local-servers.js start     # detached servers, writes .local/servers.json,
//                                           # prints MONGO_URL=... and ES_URL=...
//   node scripts/local-servers.js stop      # stops what `start` started
//   node scripts/local-servers.js status
//
// CommonJS, Node >= 20, node: built-ins only.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const net = require('node:net');
const http = require('node:http');
const crypto = require('node:crypto');
const { spawn, spawnSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..');
const LOCAL = path.join(ROOT, '.local');
const VENV = path.join(LOCAL, 'venv');
const RUN_ROOT = path.join(LOCAL, 'run');
const LOCK_DIR = path.join(LOCAL, 'venv.lock');
const SERVERS_JSON = path.join(LOCAL, 'servers.json');

const HOST = '127.0.0.1';
const REPLICA_SET = 'secantus';
const PINS = ['secantusdb==0.7.0b3', 'osmem-server==0.1.6'];
const PINS_HASH = crypto.createHash('sha256').update(PINS.join('\n')).digest('hex').slice(0, 16);
const MARKER = path.join(VENV, `.installed-${PINS_HASH}`);

const READY_TIMEOUT_MS = 60_000;
const KILL_GRACE_MS = 3_000;
const RESTART_GRACE_MS = 15_000;
const LOCK_WAIT_MS = 20 * 60_000;
const LOCK_STALE_MS = 20 * 60_000;

const VENV_PY = path.join(VENV, 'bin', 'python');
const SECANTUSD = path.join(VENV, 'bin', 'secantusd-py');

function log(msg) {
  process.stderr.write(`[local-servers] ${msg}\n`);
}

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Process helpers

function pidAlive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (e.code === 'ESRCH') return false;
    // EPERM: exists but not ours
  }
  // A zombie still answers kill(0); treat it as dead.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
  } catch {
    // no /proc: trust kill(0)
  }
  return true;
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return null;
  }
}

// True only when `pid` is alive and its command line still looks like the server we started
// (guards against killing a recycled PID).
function isOurServer(pid, kind, port) {
  if (!pidAlive(pid)) return false;
  const cl = cmdline(pid);
  if (cl == null) return false;
  if (kind === 'mongo') {
    if (!cl.includes('secantusd')) return false;
    return port ? cl.includes(`--port ${port}`) : true;
  }
  if (kind === 'es') {
    if (!cl.includes('osmem')) return false;
    return port ? cl.includes(`${HOST}:${port}`) : true;
  }
  return cl.includes('secantusd') || cl.includes('osmem');
}

function trySignal(pid, sig) {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

// Kill a PID that is not (or no longer) a child of this process: SIGTERM, SIGKILL after grace.
async function killPid(pid, kind, port) {
  if (!isOurServer(pid, kind, port)) return;
  trySignal(pid, 'SIGTERM');
  const deadline = Date.now() + KILL_GRACE_MS;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return;
    await sleep(50);
  }
  if (pidAlive(pid)) trySignal(pid, 'SIGKILL');
  const hard = Date.now() + 5_000;
  while (pidAlive(pid) && Date.now() < hard) await sleep(50);
}

function childExited(child) {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitChildExit(child, ms) {
  if (childExited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.removeListener('exit', onExit);
      resolve(false);
    }, ms);
    function onExit() {
      clearTimeout(t);
      resolve(true);
    }
    child.once('exit', onExit);
  });
}

// Kill one of our own children: SIGTERM, SIGKILL after 3 s, wait for exit.
async function killChild(child, graceMs = KILL_GRACE_MS) {
  if (!child || childExited(child)) return;
  child.kill('SIGTERM');
  if (await waitChildExit(child, graceMs)) return;
  child.kill('SIGKILL');
  await waitChildExit(child, 10_000);
}

// Children started in library mode; SIGKILLed when this node process exits.
const liveChildren = new Set();
const liveDirs = new Set(); // run dirs of library-mode handles not yet stopped
let exitHookInstalled = false;

function killAllSync() {
  for (const child of liveChildren) {
    if (!childExited(child)) {
      try {
        child.kill('SIGKILL');
      } catch {
        // ignore
      }
    }
  }
  liveChildren.clear();
  for (const dir of liveDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // best effort; sweepStale() removes leftovers later
    }
  }
  liveDirs.clear();
}

function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', killAllSync);
  // A termination signal normally ends node without running 'exit' hooks. Kill our servers,
  // then, if nobody else handles the signal, die from it as node would have.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    const handler = () => {
      killAllSync();
      process.removeListener(sig, handler);
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

function track(child) {
  installExitHook();
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
}

// ---------------------------------------------------------------------------
// venv

function venvReady() {
  return fs.existsSync(MARKER) && fs.existsSync(VENV_PY) && fs.existsSync(SECANTUSD);
}

function acquireLockSync() {
  fs.mkdirSync(LOCAL, { recursive: true });
  const start = Date.now();
  let announced = false;
  for (;;) {
    try {
      fs.mkdirSync(LOCK_DIR);
      fs.writeFileSync(path.join(LOCK_DIR, 'owner'), String(process.pid));
      return;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    // Someone holds it. Break it if the holder is dead or the lock is ancient.
    let stale = false;
    try {
      const st = fs.statSync(LOCK_DIR);
      let owner = NaN;
      try {
        owner = parseInt(fs.readFileSync(path.join(LOCK_DIR, 'owner'), 'utf8'), 10);
      } catch {
        // owner file not written yet
      }
      const age = Date.now() - st.mtimeMs;
      if (Number.isInteger(owner) && !pidAlive(owner)) stale = true;
      else if (!Number.isInteger(owner) && age > 30_000) stale = true;
      else if (age > LOCK_STALE_MS) stale = true;
    } catch {
      continue; // vanished: retry at once
    }
    if (stale) {
      fs.rmSync(LOCK_DIR, { recursive: true, force: true });
      continue;
    }
    if (Date.now() - start > LOCK_WAIT_MS) {
      throw new Error(`timed out waiting for ${LOCK_DIR} (remove it if no install is running)`);
    }
    if (!announced) {
      log('waiting for another process installing the local servers…');
      announced = true;
    }
    sleepSync(250);
  }
}

function releaseLockSync() {
  fs.rmSync(LOCK_DIR, { recursive: true, force: true });
}

function run(cmd, args, what) {
  // stdout of the child goes to our stderr so that `start`'s stdout stays machine-readable.
  const r = spawnSync(cmd, args, { stdio: ['ignore', 2, 2], cwd: ROOT });
  if (r.error) throw new Error(`${what}: cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`${what} failed (${cmd} ${args.join(' ')} exited ${r.status ?? r.signal})`);
  }
}

// Creates <repo>/.local/venv with the pinned servers. Synchronous (returns the venv path);
// `await ensureVenv()` works too. Safe to call from several processes at once.
function ensureVenv() {
  if (venvReady()) return VENV;
  acquireLockSync();
  try {
    if (venvReady()) return VENV;
    log('installing local servers (one time)…');
    if (fs.existsSync(VENV) && !fs.existsSync(VENV_PY)) {
      fs.rmSync(VENV, { recursive: true, force: true }); // half-made venv
    }
    if (!fs.existsSync(VENV_PY)) {
      const py = process.env.PYTHON || 'python3';
      log(`creating ${path.relative(ROOT, VENV)} with ${py} -m venv`);
      try {
        run(py, ['-m', 'venv', VENV], 'python venv');
      } catch (e) {
        fs.rmSync(VENV, { recursive: true, force: true });
        throw new Error(
          `${e.message}\n(on Debian/Ubuntu the venv module may need: apt-get install python3-venv)`,
        );
      }
    }
    log(`pip install ${PINS.join(' ')}`);
    run(
      VENV_PY,
      ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...PINS],
      'pip install',
    );
    if (!fs.existsSync(SECANTUSD)) throw new Error(`install did not provide ${SECANTUSD}`);
    const bin = osmemBinary(true);
    if (!fs.existsSync(bin)) throw new Error(`install did not provide ${bin}`);
    for (const f of fs.readdirSync(VENV)) {
      if (f.startsWith('.installed-')) fs.rmSync(path.join(VENV, f), { force: true });
    }
    fs.writeFileSync(MARKER, `${PINS.join('\n')}\n`);
    log('local servers installed');
    return VENV;
  } finally {
    releaseLockSync();
  }
}

let osmemBinCache = null;
function osmemBinary(refresh = false) {
  if (osmemBinCache && !refresh) return osmemBinCache;
  const r = spawnSync(
    VENV_PY,
    ['-c', 'import osmem_server; print(osmem_server.resolve_binary())'],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) {
    throw new Error(`cannot locate the osmem-server binary: ${(r.stderr || r.error || '').toString().trim()}`);
  }
  osmemBinCache = r.stdout.trim();
  return osmemBinCache;
}

// ---------------------------------------------------------------------------
// Ports and readiness

function listenEphemeral() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ port: 0, host: HOST, exclusive: true }, () => resolve(srv));
  });
}

async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) servers.push(await listenEphemeral());
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r()))));
  }
}

function readTail(file, lines = 40) {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines - 1).join('\n').trimEnd();
  } catch {
    return '(no log)';
  }
}

function readFrom(file, offset) {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= offset) return '';
      const buf = Buffer.alloc(size - offset);
      fs.readSync(fd, buf, 0, buf.length, offset);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

function fileSize(file) {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function httpGetJson(url, timeoutMs = 2_000) {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        if (res.statusCode !== 200) return resolve(null);
        try {
          resolve(JSON.parse(body));
        } catch {
          resolve(null);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

// Minimal OP_MSG `hello` against the admin db; resolves true when the node reports itself
// writable primary of our replica set (what a driver with ?replicaSet=secantus needs).
function mongoHelloPrimary(port, timeoutMs = 2_000) {
  return new Promise((resolve) => {
    // BSON {hello: 1, $db: "admin"}
    const elems = Buffer.concat([
      Buffer.from([0x10]), Buffer.from('hello\0'), int32(1),
      Buffer.from([0x02]), Buffer.from('$db\0'), int32(6), Buffer.from('admin\0'),
    ]);
    const doc = Buffer.concat([int32(4 + elems.length + 1), elems, Buffer.from([0])]);
    const body = Buffer.concat([int32(0) /* flagBits */, Buffer.from([0]) /* kind 0 */, doc]);
    const header = Buffer.concat([int32(16 + body.length), int32(1), int32(0), int32(2013)]);
    const msg = Buffer.concat([header, body]);

    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (v) => {
      if (done) return;
      done = true;
      sock.destroy();
      resolve(v);
    };
    const sock = net.connect({ host: HOST, port }, () => sock.write(msg));
    sock.setTimeout(timeoutMs, () => finish(false));
    sock.on('error', () => finish(false));
    sock.on('close', () => finish(false));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 4 || buf.length < buf.readInt32LE(0)) return;
      const writable = bsonBool(buf, 'isWritablePrimary') ?? bsonBool(buf, 'ismaster');
      const setName = bsonString(buf, 'setName');
      finish(writable === true && setName === REPLICA_SET);
    });
  });
}

function int32(n) {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
}

function bsonBool(buf, key) {
  const i = buf.indexOf(Buffer.from(`\x08${key}\0`, 'latin1'));
  if (i < 0) return undefined;
  return buf[i + key.length + 2] === 1;
}

function bsonString(buf, key) {
  const i = buf.indexOf(Buffer.from(`\x02${key}\0`, 'latin1'));
  if (i < 0) return undefined;
  const at = i + key.length + 2;
  const len = buf.readInt32LE(at);
  return buf.toString('utf8', at + 4, at + 4 + len - 1);
}

// ---------------------------------------------------------------------------
// Spawning

const MONGO_LOG = 'secantusdb.log';
const ES_LOG = 'osmem.log';

function spawnServer(kind, srv, detached) {
  const logFile = path.join(srv.dir, kind === 'mongo' ? MONGO_LOG : ES_LOG);
  const logOffset = fileSize(logFile);
  let cmd;
  let args;
  if (kind === 'mongo') {
    const data = path.join(srv.dir, 'mongo-data');
    fs.mkdirSync(data, { recursive: true });
    const config = path.join(srv.dir, 'secantusd.toml');
    if (!fs.existsSync(config)) fs.writeFileSync(config, '# empty: keeps secantusd from auto-discovering a config\n');
    cmd = SECANTUSD;
    args = ['--config', config, '--host', HOST, '--port', String(srv.mongoPort), '--storage-path', data];
  } else {
    cmd = osmemBinary();
    args = ['-addr', `${HOST}:${srv.esPort}`, '-no-stdin-watch'];
  }
  const fd = fs.openSync(logFile, 'a');
  let child;
  try {
    child = spawn(cmd, args, { cwd: srv.dir, stdio: ['ignore', fd, fd], detached, env: process.env });
  } finally {
    fs.closeSync(fd);
  }
  child.on('error', () => {}); // surfaced through the readiness check
  // Never keep the event loop alive just because a server runs: a test that forgets stop()
  // still exits, and the 'exit' hook then kills the servers.
  child.unref();
  if (!detached) track(child);
  return { child, logFile, logOffset };
}

async function waitReady(kind, srv, spawned) {
  const { child, logFile, logOffset } = spawned;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const label = kind === 'mongo' ? `SecantusDB on ${HOST}:${srv.mongoPort}` : `osmem on ${HOST}:${srv.esPort}`;
  let spawnErr = null;
  child.once('error', (e) => (spawnErr = e));
  for (;;) {
    if (spawnErr || childExited(child)) {
      const why = spawnErr ? spawnErr.message : `exited with ${child.exitCode ?? child.signalCode}`;
      throw new Error(`${label} failed to start (${why}). Log ${logFile}:\n${readTail(logFile)}`);
    }
    if (kind === 'mongo') {
      const text = readFrom(logFile, logOffset);
      if (text.includes(`listening on ${HOST}:${srv.mongoPort}`) && (await mongoHelloPrimary(srv.mongoPort))) return;
    } else {
      const j = await httpGetJson(`http://${HOST}:${srv.esPort}/`);
      if (j && typeof j === 'object' && !childExited(child)) return;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${label} not ready after ${READY_TIMEOUT_MS / 1000}s. Log ${logFile}:\n${readTail(logFile)}`,
      );
    }
    await sleep(100);
  }
}

function writePids(srv) {
  const data = {
    owner: srv.detached ? null : process.pid,
    mongo: srv.children.mongo ? srv.children.mongo.pid : null,
    es: srv.children.es ? srv.children.es.pid : null,
    mongoPort: srv.mongoPort,
    esPort: srv.esPort,
  };
  fs.writeFileSync(path.join(srv.dir, 'pids.json'), `${JSON.stringify(data, null, 2)}\n`);
}

async function startOne(kind, srv) {
  const spawned = spawnServer(kind, srv, srv.detached);
  srv.children[kind] = spawned.child;
  srv.pids[kind] = spawned.child.pid;
  writePids(srv); // record at once so a sweep can find it even if we die while waiting
  try {
    await waitReady(kind, srv, spawned);
  } catch (e) {
    await killChild(spawned.child);
    srv.children[kind] = null;
    srv.pids[kind] = null;
    throw e;
  }
  writePids(srv);
}

async function stopOne(kind, srv, graceMs = KILL_GRACE_MS) {
  const child = srv.children[kind];
  if (!child) return;
  await killChild(child, graceMs);
  srv.children[kind] = null;
  srv.pids[kind] = null;
  if (fs.existsSync(srv.dir)) writePids(srv);
}

// Remove run dirs left behind by library users that died without cleaning up (owner PID gone),
// killing their servers if still running. Never touches CLI-started (owner null) dirs.
async function sweepStale() {
  let entries;
  try {
    entries = fs.readdirSync(RUN_ROOT);
  } catch {
    return;
  }
  for (const name of entries) {
    const dir = path.join(RUN_ROOT, name);
    let info;
    try {
      info = JSON.parse(fs.readFileSync(path.join(dir, 'pids.json'), 'utf8'));
    } catch {
      // No pids.json: a start in progress, or one that failed. Remove only if clearly old.
      const m = /-(\d+)-[0-9a-f]+$/.exec(name);
      try {
        if (m && !pidAlive(Number(m[1])) && Date.now() - fs.statSync(dir).mtimeMs > 10 * 60_000) {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      } catch {
        // ignore
      }
      continue;
    }
    if (!Number.isInteger(info.owner) || pidAlive(info.owner)) continue;
    if (info.mongo) await killPid(info.mongo, 'mongo', info.mongoPort);
    if (info.es) await killPid(info.es, 'es', info.esPort);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Public API

const STATE = Symbol('localServersState');

async function startServers({ name, detached = false, ignoreEnv = false } = {}) {
  const envMongo = ignoreEnv ? undefined : process.env.MONGO_URL;
  const envEs = ignoreEnv ? undefined : process.env.ES_URL;
  if (envMongo && envEs) {
    return { mongoUrl: envMongo, esUrl: envEs, started: false, stop: async () => {} };
  }
  ensureVenv();
  await sweepStale().catch(() => {});

  const label = String(name || 'servers').replace(/[^A-Za-z0-9._-]/g, '_');
  const dir = path.join(RUN_ROOT, `${label}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  fs.mkdirSync(dir, { recursive: true });
  if (!detached) {
    installExitHook();
    liveDirs.add(dir);
  }
  const [mongoPort, esPort] = await freePorts(2);
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
  };

  const handle = {
    mongoUrl: envMongo || `mongodb://${HOST}:${mongoPort}/?replicaSet=${REPLICA_SET}`,
    esUrl: envEs || `http://${HOST}:${esPort}`,
    started: true,
    dir,
    pids: srv.pids,
    stop: async () => {
      if (srv.stopped) return;
      srv.stopped = true;
      await Promise.all([stopOne('mongo', srv), stopOne('es', srv)]);
      fs.rmSync(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
    },
  };
  Object.defineProperty(handle, STATE, { value: srv, enumerable: false });

  try {
    // Start both in parallel; osmem is quick, SecantusDB takes a few seconds.
    const results = await Promise.allSettled([
      srv.wantMongo ? startOne('mongo', srv) : null,
      srv.wantEs ? startOne('es', srv) : null,
    ]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (e) {
    await handle.stop().catch(() => {});
    throw e;
  }
  return handle;
}

function stateOf(handle, kind) {
  const srv = handle && handle[STATE];
  if (!srv) throw new Error('not a handle returned by startServers() that started servers');
  if (kind === 'mongo' && !srv.wantMongo) throw new Error('SecantusDB was not started here (MONGO_URL is set)');
  if (kind === 'es' && !srv.wantEs) throw new Error('osmem was not started here (ES_URL is set)');
  if (srv.stopped) throw new Error('servers already stopped');
  return srv;
}

// Stop only SecantusDB and start it again on the same port with the same data.
async function restartMongo(handle) {
  const srv = stateOf(handle, 'mongo');
  // SecantusDB's clean shutdown joins its accept thread (~2 s) and then drains open
  // connections (up to 5 s) before closing WiredTiger. Data must survive here, so give it
  // longer than stop()'s 3 s before resorting to SIGKILL.
  await stopOne('mongo', srv, RESTART_GRACE_MS);
  await startOne('mongo', srv);
}

// Stop osmem (port stays reserved by nobody; data is lost).
async function stopEs(handle) {
  const srv = stateOf(handle, 'es');
  await stopOne('es', srv);
}

// Start osmem again on the same port (no-op if it is running).
async function startEs(handle) {
  const srv = stateOf(handle, 'es');
  if (srv.children.es && !childExited(srv.children.es)) return;
  await startOne('es', srv);
}

// ---------------------------------------------------------------------------
// CLI

function readServersJson() {
  try {
    return JSON.parse(fs.readFileSync(SERVERS_JSON, 'utf8'));
  } catch {
    return null;
  }
}

function mongoPortOf(url) {
  try {
    return Number(new URL(url).port) || null;
  } catch {
    return null;
  }
}

async function cliStart() {
  const prev = readServersJson();
  if (prev) {
    const alive =
      isOurServer(prev.pids?.mongo, 'mongo', mongoPortOf(prev.mongoUrl)) &&
      isOurServer(prev.pids?.es, 'es', mongoPortOf(prev.esUrl));
    if (alive) {
      log(`already running (${path.relative(ROOT, SERVERS_JSON)})`);
      process.stdout.write(`MONGO_URL=${prev.mongoUrl}\nES_URL=${prev.esUrl}\n`);
      return;
    }
    await cliStop(true);
  }
  const h = await startServers({ name: 'cli', detached: true, ignoreEnv: true });
  const out = { mongoUrl: h.mongoUrl, esUrl: h.esUrl, pids: { ...h.pids }, dir: h.dir };
  fs.writeFileSync(SERVERS_JSON, `${JSON.stringify(out, null, 2)}\n`);
  log(`started; logs in ${path.relative(ROOT, h.dir)}/`);
  process.stdout.write(`MONGO_URL=${h.mongoUrl}\nES_URL=${h.esUrl}\n`);
}

async function cliStop(quiet = false) {
  const info = readServersJson();
  if (!info) {
    if (!quiet) log('nothing to stop (no .local/servers.json)');
    return;
  }
  const pids = info.pids || {};
  await Promise.all([
    pids.mongo ? killPid(pids.mongo, 'mongo', mongoPortOf(info.mongoUrl)) : null,
    pids.es ? killPid(pids.es, 'es', mongoPortOf(info.esUrl)) : null,
  ]);
  if (typeof info.dir === 'string') {
    const rel = path.relative(RUN_ROOT, path.resolve(info.dir));
    if (rel && !rel.startsWith('..') && !path.isAbsolute(rel)) {
      fs.rmSync(info.dir, { recursive: true, force: true });
    }
  }
  fs.rmSync(SERVERS_JSON, { force: true });
  if (!quiet) log('stopped');
}

function cliStatus() {
  const info = readServersJson();
  if (!info) {
    log('not running');
    process.exitCode = 1;
    return;
  }
  const m = isOurServer(info.pids?.mongo, 'mongo', mongoPortOf(info.mongoUrl));
  const e = isOurServer(info.pids?.es, 'es', mongoPortOf(info.esUrl));
  process.stdout.write(`MONGO_URL=${info.mongoUrl}\nES_URL=${info.esUrl}\n`);
  log(`secantusd ${m ? 'running' : 'NOT running'} (pid ${info.pids?.mongo}), osmem ${e ? 'running' : 'NOT running'} (pid ${info.pids?.es})`);
  if (!m || !e) process.exitCode = 1;
}

async function main(argv) {
  const cmd = argv[0];
  switch (cmd) {
    case 'install':
      ensureVenv();
      log(`venv ready at ${path.relative(ROOT, VENV)}`);
      break;
    case 'start':
      await cliStart();
      break;
    case 'stop':
      await cliStop();
      break;
    case 'status':
      cliStatus();
      break;
    default:
      process.stderr.write('usage: node scripts/local-servers.js install|start|stop|status\n');
      process.exitCode = 2;
  }
}

module.exports = {
  ensureVenv,
  startServers,
  restartMongo,
  stopEs,
  startEs,
  VENV,
  PINS,
};

if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`[local-servers] error: ${e.message}\n`);
    process.exit(1);
  });
}
