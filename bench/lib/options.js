// The harness's command line (see bench/README.md).
'use strict'

const path = require('node:path')
const { log } = require('./util')

const ROOT = path.resolve(__dirname, '..', '..')
// `postgres` and `filtered` run only when asked for (--only postgres,filtered).
const PARTS = ['copy', 'overhead', 'stream', 'collections', 'search', 'postgres', 'filtered']
// The engine's runs in the copy and stream parts, each with its own `batch` options.
const ENGINE_VARIANTS = {
  default: {},
  flush100: { flushIntervalMs: 100 },
  'adaptive-off': { adaptive: { enabled: false } },
  'adaptive-on': { adaptive: { enabled: true } },
}
const USAGE =
  'usage: node bench/run.js [--docs N] [--only copy,overhead,stream,collections,search,postgres,filtered] [--skip-mongo2elastic] [--skip-transform] [--stream-docs N] [--updates N] ' +
  '[--rates N,…] [--poll-ms N] [--stream-rounds N] [--thousand-database] [--thousand-collections N] [--engine-variants default,flush100,adaptive-off,adaptive-on] [--seed N] [--rounds N] [--verbose] [--addon DIR] [--out NAME]'

function usage(msg) {
  if (msg) log(`bench: ${msg}`)
  log(USAGE)
  process.exit(msg ? 2 : 0)
}

function parseArgs(argv) {
  const o = { docs: 40000, only: null, skipM2e: false, skipTransform: false, streamDocs: 2000, updates: 2000, seed: null, rounds: 2, verbose: false, addon: ROOT, out: 'latest' }
  Object.assign(o, { rates: null, pollMs: 20, streamRounds: 1, engineVariants: ['default', 'flush100'] })
  const list = (v) => v.split(',').map((s) => s.trim()).filter(Boolean)
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const val = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i]
      if (v === undefined) usage(`${a} needs a value`)
      return v
    }
    const int = (v) => {
      const n = Number(v)
      if (!Number.isInteger(n) || n <= 0) usage(`${a}: not a positive integer: ${v}`)
      return n
    }
    if (a.startsWith('--docs')) o.docs = int(val())
    else if (a.startsWith('--only')) o.only = new Set(val().split(',').map((s) => s.trim()).filter(Boolean))
    else if (a === '--skip-mongo2elastic') o.skipM2e = true
    else if (a === '--skip-transform') o.skipTransform = true
    else if (a === '--thousand-database') o.thousandDatabase = true
    else if (a.startsWith('--thousand-collections')) o.thousandCollections = int(val())
    else if (a.startsWith('--stream-docs')) o.streamDocs = int(val())
    else if (a.startsWith('--updates')) o.updates = int(val())
    else if (a.startsWith('--seed')) o.seed = int(val())
    else if (a.startsWith('--rounds')) o.rounds = int(val())
    else if (a.startsWith('--rates')) o.rates = list(val()).map(int)
    else if (a.startsWith('--poll-ms')) o.pollMs = int(val())
    else if (a.startsWith('--stream-rounds')) o.streamRounds = int(val())
    else if (a.startsWith('--engine-variants')) o.engineVariants = list(val())
    else if (a === '--verbose' || a === '-v') o.verbose = true
    else if (a.startsWith('--addon')) o.addon = path.resolve(val())
    else if (a.startsWith('--out')) {
      o.out = val()
      if (!/^[\w.-]+$/.test(o.out)) usage(`--out: use a plain file name: ${o.out}`)
    } else if (a === '--help' || a === '-h') usage()
    else usage(`unknown argument ${a}`)
  }
  for (const s of o.only || []) if (!PARTS.includes(s)) usage(`--only: unknown part ${s}`)
  for (const v of o.engineVariants) if (!ENGINE_VARIANTS[v]) usage(`--engine-variants: unknown variant ${v} (one of ${Object.keys(ENGINE_VARIANTS).join(', ')})`)
  if (!o.engineVariants.length) usage('--engine-variants: name at least one')
  for (const r of o.rates || []) if (r > 1000) usage(`--rates: at most 1000 updates/s: ${r}`)
  o.streamDocs = Math.min(o.streamDocs, o.docs)
  return o
}

module.exports = { parseArgs, ROOT, ENGINE_VARIANTS }
