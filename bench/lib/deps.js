// The harness's own dependencies live in bench/node_modules, installed on first use.
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { log } = require('./util')

const BENCH = path.resolve(__dirname, '..')
const DEPS = ['mongodb', '@elastic/elasticsearch', 'mongo2elastic', 'ioredis']

function ensureDeps() {
  const missing = DEPS.filter((d) => !fs.existsSync(path.join(BENCH, 'node_modules', d, 'package.json')))
  if (!missing.length) return
  log(`installing the benchmark's dependencies (npm install --prefix bench; missing: ${missing.join(', ')}) …`)
  const r = spawnSync('npm', ['install', '--prefix', BENCH, '--no-audit', '--no-fund'], { stdio: ['ignore', 2, 2], timeout: 10 * 60000 })
  if (r.status !== 0) throw new Error(`npm install --prefix bench failed (${r.error ? r.error.message : `exit ${r.status ?? r.signal}`})`)
}

// Read directly: some packages do not export their package.json.
function pkgVersion(name) {
  try {
    return JSON.parse(fs.readFileSync(path.join(BENCH, 'node_modules', name, 'package.json'), 'utf8')).version
  } catch {
    return null
  }
}

const depVersions = () => Object.fromEntries(DEPS.map((d) => [d, pkgVersion(d)]))

module.exports = { ensureDeps, depVersions }
