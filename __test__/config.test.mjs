// Bad configuration, misuse and unreachable servers give documented error codes, never hangs.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

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
  throwsConfig({ ...valid(), elasticsearch: { node: 'http://h:9200', apiKey: 'k', username: 'u' } }, /elasticsearch/)
  const { name, ...noName } = valid()
  throwsConfig(noName, /name/)
  throwsConfig({ ...valid(), mongo: { uri: 42 } }, /uri/)
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
