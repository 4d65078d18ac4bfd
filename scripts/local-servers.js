#!/usr/bin/env node
// Local test servers for mongo-elastic-sync.
//
//   SecantusDB  (PyPI secantusdb)     MongoDB wire protocol, single-node replica set "secantus"
//   osmem-server (PyPI osmem-server)  Elasticsearch/OpenSearch REST API (Go binary inside the wheel)
//
// Both are installed into <repo>/.local/venv (git-ignored) and only ever bind 127.0.0.1. The parts
// live in local-servers/: venv.js (install), process.js (spawn, kill, sweep), ready.js (readiness,
// through the mongodb driver), index.js (the library below); this file is the entry and the CLI.
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
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const servers = require('./local-servers/index')
const { ROOT, RUN_ROOT, SERVERS_JSON, log } = require('./local-servers/common')
const { isOurServer, killPid } = require('./local-servers/process')

function readServersJson() {
  try {
    return JSON.parse(fs.readFileSync(SERVERS_JSON, 'utf8'))
  } catch {
    return null
  }
}

function portOf(url) {
  try {
    return Number(new URL(url).port) || null
  } catch {
    return null
  }
}

/** Whether the servers `info` (of .local/servers.json) names still run: [mongo, es]. */
function running(info) {
  return [isOurServer(info.pids?.mongo, 'mongo', portOf(info.mongoUrl)), isOurServer(info.pids?.es, 'es', portOf(info.esUrl))]
}

async function cliStart() {
  const prev = readServersJson()
  if (prev) {
    if (running(prev).every(Boolean)) {
      log(`already running (${path.relative(ROOT, SERVERS_JSON)})`)
      process.stdout.write(`MONGO_URL=${prev.mongoUrl}\nES_URL=${prev.esUrl}\n`)
      return
    }
    await cliStop(true)
  }
  const h = await servers.startServers({ name: 'cli', detached: true, ignoreEnv: true })
  const out = { mongoUrl: h.mongoUrl, esUrl: h.esUrl, pids: { ...h.pids }, dir: h.dir }
  fs.writeFileSync(SERVERS_JSON, `${JSON.stringify(out, null, 2)}\n`)
  log(`started; logs in ${path.relative(ROOT, h.dir)}/`)
  process.stdout.write(`MONGO_URL=${h.mongoUrl}\nES_URL=${h.esUrl}\n`)
}

async function cliStop(quiet = false) {
  const info = readServersJson()
  if (!info) {
    if (!quiet) log('nothing to stop (no .local/servers.json)')
    return
  }
  const pids = info.pids || {}
  await Promise.all([
    pids.mongo ? killPid(pids.mongo, 'mongo', portOf(info.mongoUrl)) : null,
    pids.es ? killPid(pids.es, 'es', portOf(info.esUrl)) : null,
  ])
  if (typeof info.dir === 'string') {
    const rel = path.relative(RUN_ROOT, path.resolve(info.dir))
    if (rel && !rel.startsWith('..') && !path.isAbsolute(rel)) {
      fs.rmSync(info.dir, { recursive: true, force: true })
    }
  }
  fs.rmSync(SERVERS_JSON, { force: true })
  if (!quiet) log('stopped')
}

function cliStatus() {
  const info = readServersJson()
  if (!info) {
    log('not running')
    process.exitCode = 1
    return
  }
  const [m, e] = running(info)
  process.stdout.write(`MONGO_URL=${info.mongoUrl}\nES_URL=${info.esUrl}\n`)
  log(`secantusd ${m ? 'running' : 'NOT running'} (pid ${info.pids?.mongo}), osmem ${e ? 'running' : 'NOT running'} (pid ${info.pids?.es})`)
  if (!m || !e) process.exitCode = 1
}

async function main(argv) {
  switch (argv[0]) {
    case 'install':
      servers.ensureVenv()
      log(`venv ready at ${path.relative(ROOT, servers.VENV)}`)
      break
    case 'start':
      await cliStart()
      break
    case 'stop':
      await cliStop()
      break
    case 'status':
      cliStatus()
      break
    default:
      process.stderr.write('usage: node scripts/local-servers.js install|start|stop|status\n')
      process.exitCode = 2
  }
}

module.exports = servers

if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`[local-servers] error: ${e.message}\n`)
    process.exit(1)
  })
}
