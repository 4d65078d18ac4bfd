// Bad configuration, misuse and unreachable servers give documented error codes, never hangs.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { setup, unique } = require('./helpers.js')

const valid = () => ({
  name: 'cfg',
  mongo: { uri: 'mongodb://127.0.0.1:1/?replicaSet=rs0&serverSelectionTimeoutMS=1500' },
  elasticsearch: { node: 'http://127.0.0.1:1' },
  collections: ['shop.orders'],
})

function throwsConfig(options, fieldPattern) {
  assert.throws(
    () => new MongoElasticSync(options),
    (e) => {
      assert.ok(e instanceof Error, 'an Error')
      assert.equal(e.code, 'ERR_CONFIG')
      assert.match(e.message, fieldPattern)
      return true
    },
  )
}

test('invalid options throw ERR_CONFIG naming the field', () => {
  throwsConfig({ ...valid(), name: '' }, /^name: /)
  throwsConfig({ ...valid(), mongo: { uri: 'http://x' } }, /mongo\.uri/)
  throwsConfig({ ...valid(), elasticsearch: { node: 'not a url' } }, /elasticsearch\.node/)
  throwsConfig({ ...valid(), collections: [] }, /collections/)
  throwsConfig({ ...valid(), collections: ['orders'] }, /collections\[0\].*database\.collection/)
  throwsConfig({ ...valid(), collections: ['a.b', { namespace: 'a.c', index: 'Bad Index' }] }, /collections\[1\]\.index/)
  throwsConfig({ ...valid(), collections: ['a.b', 'a.b'] }, /collections\[1\].*twice/)
  throwsConfig({ ...valid(), batch: { maxDocs: 0 } }, /batch\.maxDocs/)
  // Streaming, a delete names its document by _id alone: routing by another field is refused.
  throwsConfig({ ...valid(), collections: [{ namespace: 'a.b', routing: 'tenant' }] }, /^collections\[0\]\.routing: "tenant" is not a field of _id\. .*multi-shard.*"_id\.tenant"/)
  throwsConfig({ ...valid(), namespaces: { include: ['a\\..*'], defaults: { routing: 'tenant' } } }, /^namespaces\.defaults\.routing: /)
  assert.doesNotThrow(() => new MongoElasticSync({ ...valid(), collections: [{ namespace: 'a.b', routing: '_id.tenant' }] }))
  assert.doesNotThrow(() => new MongoElasticSync({ ...valid(), mode: 'copy', collections: [{ namespace: 'a.b', routing: 'tenant' }] }))
  throwsConfig({ ...valid(), elasticsearch: { node: 'http://h:9200', apiKey: 'k', username: 'u' } }, /elasticsearch/)
  const { name, ...noName } = valid()
  throwsConfig(noName, /name/)
  throwsConfig({ ...valid(), mongo: { uri: 42 } }, /uri/)
})

test('unknown keys are errors at every level, naming the path and the close match', () => {
  const v = valid()
  const cases = [
    [{ ...v, indexTemplte: '{db}-{coll}' }, 'indexTemplte: unknown option, did you mean `indexTemplate`?'],
    [{ ...v, elasticsearch: { node: 'http://h:9200', apikey: 'k' } }, 'elasticsearch.apikey: unknown option, did you mean `apiKey`?'],
    [{ ...v, elasticsearch: { node: 'http://h:9200', tls: { rejectUnauthorised: false } } }, 'elasticsearch.tls.rejectUnauthorised: unknown option, did you mean `rejectUnauthorized`?'],
    [{ ...v, mongo: { ...v.mongo, tls: { caFiel: '/ca.pem' } } }, 'mongo.tls.caFiel: unknown option, did you mean `caFile`?'],
    [{ ...v, collections: ['a.b', { namespace: 'a.c', indx: 'c' }] }, 'collections[1].indx: unknown option, did you mean `index`?'],
    [{ ...v, collections: [{ namespace: 'a.c', fields: { exlude: ['x'] } }] }, 'collections[0].fields.exlude: unknown option, did you mean `exclude`?'],
    [{ ...v, namespaces: { include: ['a\\..*'], defaults: { pipline: 'p' } } }, 'namespaces.defaults.pipline: unknown option, did you mean `pipeline`?'],
    [{ ...v, namespaces: { include: ['a\\..*'], discoveryInterval: 100 } }, 'namespaces.discoveryInterval: unknown option, did you mean `discoveryIntervalMs`?'],
    [{ ...v, checkpoint: { colection: 'c' } }, 'checkpoint.colection: unknown option, did you mean `collection`?'],
    [{ ...v, batch: { maxdocs: 10 } }, 'batch.maxdocs: unknown option, did you mean `maxDocs`?'],
    [{ ...v, retry: { initialDelay: 10 } }, 'retry.initialDelay: unknown option, did you mean `initialDelayMs`?'],
    [{ ...v, outputs: [{ type: 'file', path: '/tmp/x.ndjson', keepFile: 2 }] }, 'outputs[0].keepFile: unknown option, did you mean `keepFiles`?'],
    [{ ...v, outputs: [{ type: 'stdout' }, { type: 'tcp', host: 'h', port: 1, tls: { servername: 'x' } }] }, 'outputs[1].tls.servername: unknown option, did you mean `serverName`?'],
    [{ ...v, outputs: [{ type: 'nats', url: 'nats://h', stram: 'S' }] }, 'outputs[0].stram: unknown option, did you mean `stream`?'],
    [{ ...v, wibble: 1 }, /^wibble: unknown option \(known: `name`, `mongo`, /],
  ]
  for (const [options, message] of cases) {
    assert.throws(
      () => new MongoElasticSync(options),
      (e) => e.code === 'ERR_CONFIG' && (typeof message === 'string' ? e.message === message : message.test(e.message)),
      `expected ${message}`,
    )
  }
})

test('wrong values name the field and the allowed ones; undefined counts as absent', () => {
  throwsConfig({ ...valid(), onDrop: 'deleteIndx' }, /^onDrop: "deleteIndx" is not one of 'deleteDocuments', 'deleteIndex', 'ignore', did you mean 'deleteIndex'\?$/)
  throwsConfig({ ...valid(), mode: 'Copy' }, /^mode: "Copy" is not one of .*did you mean 'copy'\?$/)
  throwsConfig({ ...valid(), collections: [{ namespace: 'a.b', operations: ['insert', 'upsert'] }] }, /^collections\[0\]\.operations\[1\]: "upsert" is not one of/)
  throwsConfig({ ...valid(), outputs: [{ type: 'kafka' }] }, /^outputs\[0\]: "kafka" is not one of 'elasticsearch', 'file', 'stdout', 'tcp', 'nats'$/)
  throwsConfig({ ...valid(), batch: { maxDocs: '10' } }, /^batch\.maxDocs: invalid type: string "10"/)
  throwsConfig({ ...valid(), copyReaders: 2.5 }, /^copyReaders: invalid type: floating point/)
  throwsConfig({ ...valid(), mongo: {} }, /^mongo\.uri: required/)
  assert.doesNotThrow(() => new MongoElasticSync({ ...valid(), indexTemplate: undefined, batch: { maxDocs: undefined } }))
})

test('credentials can come from files (mounted secrets), one way at a time', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-secret-'))
  try {
    const uriFile = path.join(dir, 'mongo-uri')
    fs.writeFileSync(uriFile, valid().mongo.uri + '\n')
    const keyFile = path.join(dir, 'es-key')
    fs.writeFileSync(keyFile, 'a2V5OnNlY3JldA==\n')
    assert.doesNotThrow(() => new MongoElasticSync({ ...valid(), mongo: { uriFile }, elasticsearch: { node: 'http://h:9200', apiKeyFile: keyFile } }))
    throwsConfig({ ...valid(), elasticsearch: { node: 'http://h:9200', apiKey: 'k', apiKeyFile: keyFile } }, /^elasticsearch\.apiKeyFile: give only one of apiKey and apiKeyFile$/)
    throwsConfig({ ...valid(), mongo: { uriFile: path.join(dir, 'missing') } }, /^mongo\.uriFile: cannot read ".*missing"/)
    // The file's content is a secret: a bad URI read from a file is reported redacted.
    fs.writeFileSync(uriFile, 'http://admin:hunter2@h/\n')
    assert.throws(() => new MongoElasticSync({ ...valid(), mongo: { uriFile } }), (e) => e.code === 'ERR_CONFIG' && /^mongo\.uri: /.test(e.message) && !e.message.includes('hunter2'))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('secrets stay out of error messages', () => {
  assert.throws(
    () => new MongoElasticSync({ ...valid(), mongo: { uri: 'mongo://admin:hunter2@h/' } }),
    (e) => e.code === 'ERR_CONFIG' && !e.message.includes('hunter2') && e.message.includes('admin:***'),
  )
})

test('stop() before start() is an ERR_STATE error', async () => {
  const sync = new MongoElasticSync(valid())
  await assert.rejects(sync.stop(), (e) => e.code === 'ERR_STATE' && /before start/.test(e.message))
  assert.equal(sync.stats().state, 'idle')
})

test('unreachable MongoDB rejects start() with ERR_MONGO_UNREACHABLE and a failed state event', async () => {
  const sync = new MongoElasticSync({ ...valid(), mongo: { uri: 'mongodb://app:pw-secret@127.0.0.1:1/?replicaSet=rs0&serverSelectionTimeoutMS=1500' } })
  const states = []
  sync.onEvent((e) => e.type === 'state' && states.push(e))
  await assert.rejects(sync.start(), (e) => {
    assert.equal(e.code, 'ERR_MONGO_UNREACHABLE')
    assert.ok(!e.message.includes('pw-secret'), e.message)
    return true
  })
  assert.equal(sync.stats().state, 'failed')
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(states.map((s) => s.state), ['starting', 'failed'])
  assert.equal(states[1].error.code, 'ERR_MONGO_UNREACHABLE')
})

test('with real servers', async (t) => {
  const ctx = await setup('config')
  t.after(() => ctx.teardown())
  const base = { ...valid(), name: unique('cfg'), mongo: { uri: ctx.mongoUrl }, elasticsearch: { node: ctx.esUrl }, collections: [`${unique('cfgdb')}.items`] }

  await t.test('unreachable Elasticsearch rejects start() with ERR_ES_UNREACHABLE', async () => {
    const sync = new MongoElasticSync({ ...base, elasticsearch: { node: 'http://127.0.0.1:1' } })
    await assert.rejects(sync.start(), (e) => e.code === 'ERR_ES_UNREACHABLE' && /127\.0\.0\.1:1/.test(e.message))
  })

  await t.test('start() twice is an ERR_STATE error; stop() twice is fine', async () => {
    const sync = new MongoElasticSync(base)
    await sync.start()
    await assert.rejects(sync.start(), (e) => e.code === 'ERR_STATE' && /already|while/.test(e.message))
    await sync.stop()
    await sync.stop()
    assert.equal(sync.stats().state, 'stopped')
  })
})
