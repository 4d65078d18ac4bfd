// Definitions as code and sealed secrets, end to end: keygen/encrypt from the CLI, sealed values
// opened at load (and refused, naming the field and never the value, when altered or sealed for
// another key), /public_key, and definition files driving the JS API and the CLI.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { serversFor, unique, esDocs, freePort, runCli, waitFor, withTimeout } = require('./helpers.js')
const { MongoElasticSync, generateKeyPair, sealSecret } = require('..')
const TOKEN = 'sealed-token-0123456789abcdef'
/** The environment of a child without any private key of the test runner's. */
const CLEAN_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MES_PRIVATE_KEY')))

function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-defs-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The CLI, run to its exit without the test runner's private key in its environment. */
const cli = (t, args, options = {}) => runCli(t, args, { env: CLEAN_ENV, ...options })

/** A key file as `keygen` writes it, and its public key. */
function keyFile(dir, name = 'key.txt') {
  const { privateKey, publicKey } = generateKeyPair()
  const file = path.join(dir, name)
  fs.writeFileSync(file, `# public key: ${publicKey}\n${privateKey}\n`, { mode: 0o600 })
  return { file, publicKey, privateKey }
}

/** `sealed` with one character in the middle of its ciphertext changed. */
function tampered(sealed) {
  const at = Math.floor(sealed.length * 0.75)
  return sealed.slice(0, at) + (sealed[at] === 'A' ? 'B' : 'A') + sealed.slice(at + 1)
}

const OFFLINE = { mongo: { uri: 'mongodb://127.0.0.1:1/?replicaSet=rs' }, elasticsearch: { node: 'http://127.0.0.1:9' }, collections: ['a.b'] }

describe('sealed secrets', () => {
  const ctx = serversFor('definitions-secrets')

  test('keygen writes a private key file only its owner reads and prints the public key; encrypt seals for it', async (t) => {
    const dir = tempDir(t)
    const file = path.join(dir, 'service.key')
    const made = await cli(t, ['keygen', '--out', file])
    assert.equal(made.code, 0, made.err)
    const publicKey = made.out.trim()
    assert.match(publicKey, /^age1[0-9a-z]{58}$/)
    assert.equal(fs.statSync(file).mode & 0o777, 0o600)
    const text = fs.readFileSync(file, 'utf8')
    assert.ok(text.includes(`# public key: ${publicKey}`) && /^AGE-SECRET-KEY-1[0-9A-Z]+$/m.test(text))
    assert.ok(!made.out.includes('AGE-SECRET-KEY'), 'the private key is not printed')

    const again = await cli(t, ['keygen', '--out', file])
    assert.equal(again.code, 2)
    assert.match(again.err, /ERR_CONFIG: --out .*cannot write the key: EEXIST/)
    assert.equal(fs.readFileSync(file, 'utf8'), text, 'an existing key is never overwritten')

    const sealed = await cli(t, ['encrypt', '--public-key', publicKey], { input: 'hunter2-plain\n' })
    assert.equal(sealed.code, 0, sealed.err)
    assert.match(sealed.out.trim(), /^enc:age:[A-Za-z0-9+/=]+$/)
    assert.ok(!sealed.out.includes('hunter2'))
    const bad = await cli(t, ['encrypt', '--public-key', 'age1nope'], { input: 'x' })
    assert.equal(bad.code, 2)
    assert.match(bad.err, /ERR_CONFIG: publicKey: not an age X25519 public key/)
  })

  test('a sealed token opens with the private key, and /public_key serves the public key', async (t) => {
    const dir = tempDir(t)
    const key = keyFile(dir)
    const db = ctx.mongo.db(unique('sealed'))
    await db.collection('c').insertMany([{ _id: 1 }, { _id: 2 }])
    const port = await freePort()
    const sync = new MongoElasticSync({
      name: unique('sealed'),
      mongo: { uri: sealSecret(key.publicKey, ctx.mongoUrl) },
      elasticsearch: { node: ctx.esUrl },
      collections: [`${db.databaseName}.c`],
      http: { port, token: sealSecret(key.publicKey, TOKEN) },
      privateKeyFile: key.file,
    })
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    const base = `http://127.0.0.1:${port}`
    const authorized = await fetch(`${base}/stats`, { headers: { authorization: `Bearer ${TOKEN}` } })
    assert.equal(authorized.status, 200, 'the decrypted token is the one required')
    assert.equal((await fetch(`${base}/stats`)).status, 401)
    const published = await fetch(`${base}/public_key`)
    assert.equal(published.status, 200)
    assert.equal((await published.text()).trim(), key.publicKey)
    await sync.stop()
  })

  test('/public_key answers 404 when no private key is configured', async (t) => {
    const db = ctx.mongo.db(unique('nokey'))
    await db.collection('c').insertOne({ _id: 1 })
    const port = await freePort()
    const sync = new MongoElasticSync({ name: unique('nokey'), mongo: { uri: ctx.mongoUrl }, elasticsearch: { node: ctx.esUrl }, collections: [`${db.databaseName}.c`], http: { port } })
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    assert.equal((await fetch(`http://127.0.0.1:${port}/public_key`)).status, 404)
    await sync.stop()
  })

  test('altered, wrongly keyed or keyless sealed values are refused naming the field, never the value', (t) => {
    const dir = tempDir(t)
    const key = keyFile(dir)
    const other = generateKeyPair()
    const plain = 'Es-Plain-Password-31'
    const sealed = sealSecret(key.publicKey, plain)
    const cases = [
      [{ elasticsearch: { node: 'http://127.0.0.1:9', username: 'u', password: sealSecret(other.publicKey, plain) }, privateKeyFile: key.file }, /^elasticsearch\.password: cannot decrypt the sealed value: it was altered, or sealed for another key$/],
      [{ elasticsearch: { node: 'http://127.0.0.1:9', username: 'u', password: tampered(sealed) }, privateKeyFile: key.file }, /^elasticsearch\.password: cannot decrypt/],
      [{ outputs: [{ type: 'nats', url: 'nats://127.0.0.1:4222', subject: 's', token: sealed }], privateKeyFile: key.file }, null],
      [{ elasticsearch: { node: 'http://127.0.0.1:9', apiKey: sealed } }, /^elasticsearch\.apiKey: holds a sealed value but no private key is given/],
      [{ collections: [{ namespace: 'a.b', index: sealed }], privateKeyFile: key.file }, /^collections\[0\]\.index: sealed values \(enc:age:…\) are only read in secret fields/],
      [{ privateKeyFile: path.join(dir, 'missing.key') }, /^privateKeyFile: cannot read "/],
    ]
    for (const [patch, expected] of cases) {
      const options = { name: 'n', ...OFFLINE, ...patch }
      if (expected === null) {
        assert.doesNotThrow(() => new MongoElasticSync(options), 'a sealed NATS token opens')
        continue
      }
      assert.throws(
        () => new MongoElasticSync(options),
        (e) => e.code === 'ERR_CONFIG' && expected.test(e.message) && !e.message.includes(plain) && !e.message.includes('enc:age:' + sealed.slice(8, 40)),
        JSON.stringify(Object.keys(patch)),
      )
    }
  })

  test('the CLI opens sealed values with MES_PRIVATE_KEY_FILE and never prints them; a wrong key exits 2 naming the field', async (t) => {
    const dir = tempDir(t)
    const key = keyFile(dir)
    const db = ctx.mongo.db(unique('clisealed'))
    await db.collection('c').insertMany([{ _id: 1, v: 'a' }, { _id: 2, v: 'b' }])
    const index = unique('clisealed')
    const config = path.join(dir, 'sync.json')
    const options = {
      name: unique('clisealed'),
      mode: 'copy',
      elasticsearch: { node: ctx.esUrl },
      collections: [{ namespace: `${db.databaseName}.c`, index }],
      http: { port: 0, token: sealSecret(key.publicKey, TOKEN) },
    }
    fs.writeFileSync(config, JSON.stringify({ ...options, mongo: { uri: sealSecret(key.publicKey, ctx.mongoUrl) } }))
    const ran = await cli(t, ['-c', config, '--log-format', 'json'], { env: { ...CLEAN_ENV, MES_PRIVATE_KEY_FILE: key.file } })
    assert.equal(ran.code, 0, ran.err)
    assert.equal((await esDocs(ctx.esUrl, index)).size, 2)
    assert.ok(!`${ran.out}${ran.err}`.includes(TOKEN), 'the token is never printed')

    const wrong = generateKeyPair()
    const refused = await cli(t, ['-c', config], { env: { ...CLEAN_ENV, MES_PRIVATE_KEY: wrong.privateKey } })
    assert.equal(refused.code, 2)
    assert.match(refused.err, /ERR_CONFIG: (http\.token|mongo\.uri): cannot decrypt the sealed value: it was altered, or sealed for another key\n$/)
    assert.ok(!`${refused.out}${refused.err}`.includes(TOKEN) && !refused.err.includes(ctx.mongoUrl) && !refused.err.includes(wrong.privateKey))
  })
})

describe('definitions', () => {
  const ctx = serversFor('definitions')

  /** A YAML definition of two syncs copying one collection each; the Mongo URI from the environment. */
  async function twoSyncs(t, dir) {
    const db = ctx.mongo.db(unique('def'))
    await db.collection('a').insertMany([{ _id: 1, n: 1 }])
    await db.collection('b').insertMany([{ _id: 1, n: 1 }, { _id: 2, n: 2 }, { _id: 3, n: 3 }])
    const prefix = unique('def')
    const file = path.join(dir, 'defs.yaml')
    fs.writeFileSync(
      file,
      [
        'version: 1',
        'syncs:',
        `  ${prefix}_a:`,
        '    mongo: { uri: "${DEFS_TEST_MONGO_URL}" }',
        `    elasticsearch: { node: "${ctx.esUrl}" }`,
        '    mode: copy',
        `    collections: [{ namespace: ${db.databaseName}.a, index: ${prefix}_a }]`,
        `  ${prefix}_b:`,
        '    mongo: { uri: "${DEFS_TEST_MONGO_URL}" }',
        `    elasticsearch: { node: "${ctx.esUrl}" }`,
        '    mode: copy',
        `    collections: [{ namespace: ${db.databaseName}.b, index: ${prefix}_b, fields: { exclude: [n] } }]`,
        '',
      ].join('\n'),
    )
    process.env.DEFS_TEST_MONGO_URL = ctx.mongoUrl
    t.after(() => delete process.env.DEFS_TEST_MONGO_URL)
    return { file, prefix }
  }

  test('fromDefinition runs the named sync of a YAML file', async (t) => {
    const dir = tempDir(t)
    const { file, prefix } = await twoSyncs(t, dir)
    const sync = MongoElasticSync.fromDefinition(file, `${prefix}_b`)
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    await withTimeout(sync.wait(), 90000, 'the copy did not finish')
    const docs = await esDocs(ctx.esUrl, `${prefix}_b`)
    assert.deepEqual([...docs.keys()].sort(), ['1', '2', '3'])
    assert.deepEqual(docs.get('2'), {}, 'the field rule of the definition applied')
    assert.equal((await fetch(`${ctx.esUrl}/${prefix}_a`)).status, 404, 'the other sync did not run')
  })

  test('a definition is checked whole, errors naming the path from its root', () => {
    const sync = (extra = {}) => ({ ...OFFLINE, ...extra })
    const cases = [
      [{ syncs: { a: sync(), b: sync({ collections: [{ namespace: 'a.b', indx: 'x' }] }) } }, 'a', 'syncs.b.collections[0].indx: unknown option, did you mean `index`?'],
      [{ syncs: { a: sync(), b: sync() } }, undefined, 'the definition holds several syncs (a, b): name the one to use'],
      [{ syncs: { a: sync() } }, 'c', 'syncs.c: not defined (defined: a)'],
      [{ syncs: { a: sync() }, extra: 1 }, 'a', 'extra: unknown option (known: `version`, `syncs`)'],
      [{ syncs: { a: sync({ name: 'b' }) } }, 'a', 'syncs.a.name: must be the sync\'s key "a" (or left out)'],
      [{ syncs: { a: sync({ logger: {} }) } }, 'a', /^syncs\.a\.logger: unknown option \(known: `name`, `mongo`, .*`privateKeyFile`\)$/],
    ]
    for (const [definition, name, message] of cases) {
      const matches = (text) => (message instanceof RegExp ? message.test(text) : text === message)
      assert.throws(() => MongoElasticSync.fromDefinition(definition, name), (e) => e.code === 'ERR_CONFIG' && matches(e.message), String(message))
    }
    const single = MongoElasticSync.fromDefinition({ syncs: { only: sync() } })
    assert.equal(single.stats().state, 'idle')
  })

  test('the CLI runs a sync of a definition file (run -f FILE --name NAME)', async (t) => {
    const dir = tempDir(t)
    const { file, prefix } = await twoSyncs(t, dir)
    const ran = await cli(t, ['run', '-f', file, '--name', `${prefix}_a`], { env: { ...CLEAN_ENV, DEFS_TEST_MONGO_URL: ctx.mongoUrl } })
    assert.equal(ran.code, 0, ran.err)
    await waitFor('the copied document', async () => (await esDocs(ctx.esUrl, `${prefix}_a`)).size === 1)
    const unknown = await cli(t, ['run', '-f', file, '--name', 'nope'], { env: { ...CLEAN_ENV, DEFS_TEST_MONGO_URL: ctx.mongoUrl } })
    assert.equal(unknown.code, 2)
    assert.match(unknown.err, /ERR_CONFIG: syncs\.nope: not defined \(defined: /)
    const usage = await cli(t, ['frobnicate'])
    assert.equal(usage.code, 2)
    assert.match(usage.err, /ERR_USAGE: unknown command "frobnicate"/)
  })
})
