// The harness's command line (see bench/README.md).
'use strict'

const path = require('node:path')
const { log } = require('./util')

const ROOT = path.resolve(__dirname, '..', '..')
// `postgres` runs only when asked for (--only postgres).
const PARTS = ['copy', 'overhead', 'stream', 'collections', 'search', 'postgres']
const USAGE =
  'usage: node bench/run.js [--docs N] [--only copy,overhead,stream,collections,search,postgres] [--skip-mongo2elastic] [--stream-docs N] [--updates N] [--seed N] [--rounds N] [--verbose] [--addon DIR] [--out NAME]'

function usage(msg) {
  if (msg) log(`bench: ${msg}`)
  log(USAGE)
  process.exit(msg ? 2 : 0)
}

function parseArgs(argv) {
  const o = { docs: 40000, only: null, skipM2e: false, streamDocs: 2000, updates: 2000, seed: null, rounds: 2, verbose: false, addon: ROOT, out: 'latest' }
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
    else if (a.startsWith('--stream-docs')) o.streamDocs = int(val())
    else if (a.startsWith('--updates')) o.updates = int(val())
    else if (a.startsWith('--seed')) o.seed = int(val())
    else if (a.startsWith('--rounds')) o.rounds = int(val())
    else if (a === '--verbose' || a === '-v') o.verbose = true
    else if (a.startsWith('--addon')) o.addon = path.resolve(val())
    else if (a.startsWith('--out')) {
      o.out = val()
      if (!/^[\w.-]+$/.test(o.out)) usage(`--out: use a plain file name: ${o.out}`)
    } else if (a === '--help' || a === '-h') usage()
    else usage(`unknown argument ${a}`)
  }
  for (const s of o.only || []) if (!PARTS.includes(s)) usage(`--only: unknown part ${s}`)
  o.streamDocs = Math.min(o.streamDocs, o.docs)
  return o
}

module.exports = { parseArgs, ROOT }
