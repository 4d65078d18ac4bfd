// TLS on both sides, through TLS-terminating proxies (certificates made by a test CA) in front of
// the real local servers: verification works, a wrong CA is rejected with a clear error.
import test from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { setup, unique, nextEvent, waitForMirror } = require('./helpers.js')
const { makeCerts, startTlsProxy } = require('./tls-fixtures.js')

test('TLS', async (t) => {
  const ctx = await setup('tls')
  const certs = makeCerts()
  const esHost = new URL(ctx.esUrl).host
  const mongoHost = new URL(ctx.mongoUrl.replace('mongodb://', 'http://')).host
  const esTls = await startTlsProxy({ target: esHost, certs })
  const esMutual = await startTlsProxy({ target: esHost, certs, requireClientCert: true })
  const mongoTls = await startTlsProxy({ target: mongoHost, certs })
  t.after(async () => {
    await Promise.all([esTls.close(), esMutual.close(), mongoTls.close()])
    certs.cleanup()
    await ctx.teardown()
  })
  const db = ctx.mongo.db(unique('tls'))
  await db.collection('c').insertMany([{ _id: 1 }, { _id: 2 }])
  // Through a proxy the replica set's advertised (plain) address must not be used: connect directly.
  const mongoTlsUri = `mongodb://127.0.0.1:${mongoTls.port}/?directConnection=true&tls=true&serverSelectionTimeoutMS=3000`

  function sync(overrides) {
    const s = new MongoElasticSync({
      name: unique('tls'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index: unique('tls') }],
      batch: { flushIntervalMs: 100 },
      ...overrides,
    })
    const events = []
    s.onEvent((e) => events.push(e))
    t.after(() => s.stop().catch(() => {}))
    return { s, events, index: undefined }
  }

  async function mirrors(overrides) {
    const index = unique('tls')
    const { s, events } = sync({ ...overrides, collections: [{ namespace: `${db.databaseName}.c`, index }] })
    const streaming = nextEvent(s, (e) => e.type === 'state' && e.state === 'streaming')
    await s.start()
    await streaming
    await db.collection('c').updateOne({ _id: 1 }, { $set: { at: Date.now() } })
    await waitForMirror(ctx, db.collection('c'), index)
    await s.stop()
    return events
  }

  await t.test('Elasticsearch over HTTPS trusts the given CA and rejects another one', async () => {
    await mirrors({ elasticsearch: { node: esTls.url('https'), tls: { caFile: certs.caFile } } })

    const wrong = sync({ elasticsearch: { node: esTls.url('https'), tls: { caFile: certs.otherCaFile } } })
    await assert.rejects(wrong.s.start(), (e) => e.code === 'ERR_ES_UNREACHABLE' && /certificate|issuer|tls|ssl/i.test(e.message))
    const unknown = sync({ elasticsearch: { node: esTls.url('https') } })
    await assert.rejects(unknown.s.start(), (e) => e.code === 'ERR_ES_UNREACHABLE', 'the system roots do not know the test CA')
  })

  await t.test('rejectUnauthorized: false connects anyway, with a warning', async () => {
    const events = await mirrors({ elasticsearch: { node: esTls.url('https'), tls: { caFile: certs.otherCaFile, rejectUnauthorized: false } } })
    assert.ok(events.some((e) => e.type === 'warning' && /NOT verified/.test(e.message)))
  })

  await t.test('mutual TLS presents the client certificate; without it the server refuses', async () => {
    await mirrors({ elasticsearch: { node: esMutual.url('https'), tls: { caFile: certs.caFile, certFile: certs.clientCertFile, keyFile: certs.clientKeyFile } } })
    const anonymous = sync({ elasticsearch: { node: esMutual.url('https'), tls: { caFile: certs.caFile } } })
    await assert.rejects(anonymous.s.start(), (e) => e.code === 'ERR_ES_UNREACHABLE')
    const missing = sync({ elasticsearch: { node: esMutual.url('https'), tls: { caFile: certs.caFile, certFile: '/nonexistent.pem', keyFile: certs.clientKeyFile } } })
    await assert.rejects(missing.s.start(), (e) => e.code === 'ERR_CONFIG' && /elasticsearch\.tls\.certFile/.test(e.message))
  })

  await t.test('MongoDB over TLS with mongo.tls.caFile (or tlsCAFile in the URI); a wrong CA is rejected', async () => {
    await mirrors({ mongo: { uri: mongoTlsUri, tls: { caFile: certs.caFile } } })
    await mirrors({ mongo: { uri: `${mongoTlsUri}&tlsCAFile=${encodeURIComponent(certs.caFile)}` } })
    const wrong = sync({ mongo: { uri: mongoTlsUri, tls: { caFile: certs.otherCaFile } } })
    await assert.rejects(wrong.s.start(), (e) => e.code === 'ERR_MONGO_UNREACHABLE')
    const missing = sync({ mongo: { uri: mongoTlsUri, tls: { caFile: '/nonexistent-ca.pem' } } })
    await assert.rejects(missing.s.start(), (e) => e.code === 'ERR_CONFIG' && /mongo\.tls\.caFile/.test(e.message))
  })
})
