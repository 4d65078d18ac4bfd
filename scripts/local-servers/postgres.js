// A private PostgreSQL 15 for tests and benches: `initdb` in a temporary directory, then the
// server on a free port of 127.0.0.1 with wal_level=logical (the machine's own PostgreSQL runs
// with wal_level=replica, which logical replication cannot use). PostgreSQL refuses to run as
// root, so as root the server runs as the `postgres` system user (or `nobody`) through
// setpriv, which execs it directly (the PID is the server's own, so it is killed directly).
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { HOST, sleep } = require('./common')
const proc = require('./process')

const PASSWORD = 'mes-test-secret'

/** The directory of the PostgreSQL binaries: PG_BIN, else Debian's PostgreSQL 15. */
function binDir() {
  const dir = process.env.PG_BIN || '/usr/lib/postgresql/15/bin'
  if (!fs.existsSync(path.join(dir, 'initdb'))) {
    throw new Error(`no PostgreSQL binaries in ${dir} (install Debian's postgresql-15, or set PG_BIN)`)
  }
  return dir
}

/** As root: the unprivileged user to run as, and its ids; otherwise none. */
function runAs() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null
  for (const user of ['postgres', 'nobody']) {
    try {
      const uid = Number(execFileSync('id', ['-u', user]).toString().trim())
      const gid = Number(execFileSync('id', ['-g', user]).toString().trim())
      return { user, uid, gid }
    } catch {
      // no such user
    }
  }
  throw new Error('running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as')
}

/** `cmd args` as the unprivileged user when root. */
function command(as, cmd, args) {
  if (!as) return { cmd, args }
  return { cmd: 'setpriv', args: [`--reuid=${as.uid}`, `--regid=${as.gid}`, '--clear-groups', '--', cmd, ...args] }
}

function chownTree(dir, as) {
  if (!as) return
  fs.chownSync(dir, as.uid, as.gid)
  for (const entry of fs.readdirSync(dir)) {
    const p = path.join(dir, entry)
    if (fs.statSync(p).isDirectory()) chownTree(p, as)
    else fs.chownSync(p, as.uid, as.gid)
  }
}

async function waitReady(port, child, logFile) {
  const { Client } = require('pg')
  const deadline = Date.now() + 60_000
  for (;;) {
    if (proc.childExited(child)) {
      throw new Error(`PostgreSQL exited during start-up: ${fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-2000) : ''}`)
    }
    const client = new Client({ host: HOST, port, user: 'postgres', password: PASSWORD, database: 'postgres' })
    try {
      await client.connect()
      await client.query('SELECT 1')
      await client.end()
      return
    } catch (e) {
      await client.end().catch(() => {})
      if (Date.now() > deadline) throw new Error(`PostgreSQL on port ${port} not ready after 60 s: ${e.message}`)
      await sleep(200)
    }
  }
}

/**
 * Starts a private PostgreSQL (superuser `postgres`, password in the URL) and resolves with
 * { url, port, password, dir, stop() }; `settings` adds `-c key=value` server settings; `ssl:
 * { certFile, keyFile }` turns TLS on with that certificate (plain connections still allowed);
 * with `ssl.clientCaFile`, TLS sessions must also present a client certificate of that CA
 * (`clientcert=verify-ca`; plain sessions are unchanged).
 */
async function startPostgres({ name = 'pg', settings = {}, ssl = null } = {}) {
  const bin = binDir()
  const as = runAs()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `mes-${String(name).replace(/[^A-Za-z0-9_-]/g, '_')}-`))
  proc.removeDirAtExit(dir)
  fs.chmodSync(dir, 0o755)
  const data = path.join(dir, 'data')
  const pwfile = path.join(dir, 'pw')
  fs.writeFileSync(pwfile, PASSWORD + '\n')
  const tls = {}
  if (ssl) {
    // The server reads its key only if no one else can (0600, its own user).
    fs.copyFileSync(ssl.certFile, path.join(dir, 'server.crt'))
    fs.copyFileSync(ssl.keyFile, path.join(dir, 'server.key'))
    fs.chmodSync(path.join(dir, 'server.key'), 0o600)
    Object.assign(tls, { ssl: 'on', ssl_cert_file: path.join(dir, 'server.crt'), ssl_key_file: path.join(dir, 'server.key') })
    if (ssl.clientCaFile) {
      fs.copyFileSync(ssl.clientCaFile, path.join(dir, 'client-ca.crt'))
      tls.ssl_ca_file = path.join(dir, 'client-ca.crt')
    }
  }
  chownTree(dir, as)
  const init = command(as, path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--no-sync', '--locale=C'])
  execFileSync(init.cmd, init.args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  if (ssl && ssl.clientCaFile) {
    // Checked first: a TLS session from 127.0.0.1 needs a client certificate of the CA (and the password).
    const hba = path.join(data, 'pg_hba.conf')
    fs.writeFileSync(hba, 'hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\n' + fs.readFileSync(hba, 'utf8'))
  }
  const [port] = await proc.freePorts(1)
  const all = {
    listen_addresses: HOST,
    unix_socket_directories: dir,
    wal_level: 'logical',
    max_replication_slots: 20,
    max_wal_senders: 20,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    ...tls,
    ...settings,
  }
  const args = ['-D', data, '-p', String(port), ...Object.entries(all).flatMap(([k, v]) => ['-c', `${k}=${v}`])]
  const server = command(as, path.join(bin, 'postgres'), args)
  const logFile = path.join(dir, 'postgres.log')
  const child = proc.spawnLogged(server.cmd, server.args, { cwd: dir, logFile, detached: false })
  try {
    await waitReady(port, child, logFile)
  } catch (e) {
    await proc.killChild(child)
    throw e
  }
  return {
    url: `postgres://postgres:${PASSWORD}@${HOST}:${port}/postgres`,
    port,
    password: PASSWORD,
    dir,
    logFile,
    async stop() {
      // SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for clients to leave).
      if (!proc.childExited(child)) child.kill('SIGINT')
      await proc.killChild(child, 10_000)
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

module.exports = { startPostgres, PASSWORD }
