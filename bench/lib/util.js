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
/** The middle value of the finite numbers in `values` (the mean of the two middle ones for an even count), or null. */
function median(values) {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b)
  if (!v.length) return null
  const mid = Math.floor(v.length / 2)
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2
}

function writeAtomic(file, text) {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, text)
  fs.renameSync(tmp, file)
}

module.exports = { log, withTimeout, round, per100k, median, writeAtomic }
