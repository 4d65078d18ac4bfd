// Small helpers every part of the harness uses: logging, time bounds, rounding, result files.
'use strict'

const fs = require('node:fs')

const log = (s) => process.stderr.write(`${s}\n`)

function withTimeout(promise, ms, what) {
  let t
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no result within ${Math.round(ms / 1000)} s`)), ms)
    }),
  ]).finally(() => clearTimeout(t))
}

const round = (v, d = 0) => (v === null || v === undefined || !Number.isFinite(v) ? null : Math.round(v * 10 ** d) / 10 ** d)
const per100k = (sec, docs) => (docs ? round((sec / docs) * 100000, 2) : null)

function writeAtomic(file, text) {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, text)
  fs.renameSync(tmp, file)
}

module.exports = { log, withTimeout, round, per100k, writeAtomic }
