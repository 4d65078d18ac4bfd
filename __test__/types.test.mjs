// The TypeScript declarations as a user meets them (dist/*.d.ts, built from lib/ over the
// generated index.d.ts): a program using the whole API type-checks, in CommonJS and ES module
// form, and typical mistakes are compile errors.
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import path from 'node:path'

const require = createRequire(import.meta.url)
const HERE = path.dirname(new URL(import.meta.url).pathname)

test('the declarations: a program using the API type-checks, and marked mistakes are errors', () => {
  const tsc = require.resolve('typescript/bin/tsc')
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(HERE, 'types', 'tsconfig.json')], { encoding: 'utf8' })
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}`)
})
