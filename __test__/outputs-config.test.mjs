// The outputs' options: what is refused (ERR_CONFIG naming the field) and what is accepted. No
// server is needed: the options are checked when the sync is made.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { NATS_URL } = require('./outputs-helpers.js')

test('invalid outputs options throw ERR_CONFIG naming the field', () => {
  const base = () => ({
    name: 'out-cfg',
    mongo: { uri: 'mongodb://127.0.0.1:1/?replicaSet=rs0&serverSelectionTimeoutMS=1500' },
    collections: ['shop.orders'],
  })
  const es = { node: 'http://127.0.0.1:1' }
  const throwsConfig = (options, ...patterns) =>
    assert.throws(
      () => new MongoElasticSync(options),
      (e) => {
        assert.ok(e instanceof Error, 'an Error')
        assert.equal(e.code, 'ERR_CONFIG', e.message)
        for (const p of patterns) assert.match(e.message, p)
        return true
      },
      `expected ERR_CONFIG for ${JSON.stringify(options.outputs)}`,
    )
  const file = { type: 'file', path: path.join(os.tmpdir(), 'never-written.ndjson') }

  throwsConfig({ ...base(), outputs: [{ type: 'nope' }] }, /outputs\[0\]/)
  throwsConfig({ ...base(), outputs: [{ type: 'file' }] }, /outputs\[0\]/, /path/)
  throwsConfig({ ...base(), outputs: [{ type: 'stdout' }, { type: 'file' }] }, /outputs\[1\]/, /path/)
  throwsConfig({ ...base(), outputs: [{ ...file, fsync: 'sometimes' }] }, /outputs\[0\]/, /fsync/)
  throwsConfig({ ...base(), outputs: [{ type: 'nats' }] }, /outputs\[0\]/, /url/)
  throwsConfig({ ...base(), outputs: [{ type: 'tcp', host: '127.0.0.1', port: 0 }] }, /outputs\[0\]/, /port/)
  throwsConfig({ ...base(), outputs: [{ type: 'tcp', host: '127.0.0.1', port: 70000 }] }, /outputs\[0\]/, /port/)
  throwsConfig({ ...base(), outputs: [] }, /outputs/)
  throwsConfig({ ...base(), outputs: [file, { ...file, rotateBytes: 1 << 20 }] }, /outputs\[1\]/) // two outputs writing one file
  throwsConfig({ ...base(), outputs: [{ type: 'elasticsearch' }] }, /elasticsearch/)
  throwsConfig({ ...base(), outputs: [file, { type: 'elasticsearch' }] }, /elasticsearch/)
  throwsConfig(base(), /elasticsearch/) // no outputs: Elasticsearch, which needs its options

  // Valid: Elasticsearch options are needed only for an Elasticsearch output.
  for (const outputs of [[file], [{ type: 'stdout' }], [{ type: 'tcp', host: '127.0.0.1', port: 5045 }], [{ type: 'nats', url: NATS_URL }], [{ type: 'elasticsearch' }, file]]) {
    const options = { ...base(), outputs, ...(outputs.some((o) => o.type === 'elasticsearch') ? { elasticsearch: es } : {}) }
    assert.doesNotThrow(() => new MongoElasticSync(options), `valid: ${JSON.stringify(outputs)}`)
  }
  assert.doesNotThrow(() => new MongoElasticSync({ ...base(), elasticsearch: es }), 'no outputs: Elasticsearch, as before')
})
