#!/usr/bin/env node
// Packs what `npm install` would fetch for this machine, from a build here: the main package
// and this platform's binary package (npm/<platform>, with the addon `npm run build` made).
// Used by the pack-and-install test, the Dockerfile, and to install from a clone.
//
//   node scripts/pack.js [OUT_DIR]     (default dist/) prints the two tarballs' paths
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const ROOT = path.join(__dirname, '..')
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm'

/** `glibc` or `musl` on Linux, as npm's `libc` field names them. */
function libc() {
  if (process.platform !== 'linux') return undefined
  return process.report.getReport().header.glibcVersionRuntime ? 'glibc' : 'musl'
}

/** The npm/<platform> directory whose os, cpu and libc fit this machine. */
function platformDir() {
  const fits = (list, value) => !list || list.includes(value)
  for (const dir of fs.readdirSync(path.join(ROOT, 'npm'))) {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'npm', dir, 'package.json'), 'utf8'))
    if (fits(pkg.os, process.platform) && fits(pkg.cpu, process.arch) && fits(pkg.libc, libc())) return { dir: path.join(ROOT, 'npm', dir), pkg }
  }
  throw new Error(`no package in npm/ is for ${process.platform} ${process.arch} ${libc() ?? ''}`)
}

function pack(dir, out) {
  const [info] = JSON.parse(execFileSync(NPM, ['pack', '--json', '--pack-destination', out], { cwd: dir, encoding: 'utf8', shell: process.platform === 'win32' }))
  return path.join(out, info.filename)
}

function main(out = path.join(ROOT, 'dist')) {
  out = path.resolve(out)
  fs.mkdirSync(out, { recursive: true })
  const platform = platformDir()
  const binary = path.join(ROOT, platform.pkg.main)
  if (!fs.existsSync(binary)) throw new Error(`${platform.pkg.main} is not built: run npm run build first`)
  fs.copyFileSync(binary, path.join(platform.dir, platform.pkg.main))
  const tarballs = [pack(ROOT, out), pack(platform.dir, out)]
  console.log(tarballs.join('\n'))
  return tarballs
}

if (require.main === module) {
  try {
    main(process.argv[2])
  } catch (e) {
    console.error(`pack: ${e.message}`)
    process.exit(1)
  }
}

module.exports = { pack: main }
