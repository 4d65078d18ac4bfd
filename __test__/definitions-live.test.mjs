// Stored definitions, watched live, against the local servers: a running StoredSync picks up a new
// version (a collection added and copied, a field rule changed and re-copied while a reader of the
// alias never sees a half-filled index), refuses a tampered secret while it keeps running, records
// each change in the history; writes are fenced by version; the status page's routes list the
// definitions and instances and start/stop a sync behind the token; no secret in any output.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'

const require = createRequire(import.meta.url)
const { ObjectId } = require('mongodb')
const { serversFor, unique, es, esDocs, waitFor, freePort, runCli, eachLine, serviceKey } = require('./helpers.js')
const { generateKeyPair, sealSecret, StoredSync, writeDefinition, definitionHistory, readDefinition } = require('..')
const DOCS = 80
const TOKEN = 'live-token-0123456789abcdef'

/** A sealed value with one byte of its ciphertext flipped. */
function tamper(sealed) {
  const bytes = Buffer.from(sealed.slice('enc:age:'.length), 'base64')
  bytes[bytes.length - 1] ^= 1
  return `enc:age:${bytes.toString('base64')}`
}

describe('stored definitions, watched live', () => {
  const ctx = serversFor('definitions-live')

  test('changes are applied live, a bad version is refused while the sync runs on, start/stop over HTTP behind the token', async (t) => {
    const u = unique('live')
    const { key, seal } = serviceKey(t)
    const store = { uri: seal(ctx.mongoUrl), database: u, collection: 'defs' }
    const db = ctx.mongo.db(u)
    const docs = Array.from({ length: DOCS }, (_, i) => ({ _id: i + 1, n: i, x: `x${i}` }))
    for (const c of ['a', 'b', 'c']) await db.collection(c).insertMany(docs)
    const [port, ctlPort] = [await freePort(), await freePort()]
    const outputs = []
    const base = { mongo: { uri: seal(ctx.mongoUrl) }, elasticsearch: { node: ctx.esUrl }, batch: { flushIntervalMs: 100 } }
    const main = (collections) => ({ ...base, http: { port, token: seal(TOKEN) }, collections })
    const a = { namespace: `${u}.a`, index: `${u}_a` }
    const v1 = { syncs: { [u]: main([a]), [`${u}_ctl`]: { ...base, http: { port: ctlPort }, collections: [{ namespace: `${u}.c`, index: `${u}_c` }] } } }
    const v2 = { syncs: { [u]: main([{ ...a, fields: { exclude: ['x'] } }, { namespace: `${u}.b`, index: `${u}_b` }]) } }

    // Version 1 is stored by the CLI; a plain secret is refused.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-live-'))
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
    fs.writeFileSync(path.join(dir, 'v1.json'), JSON.stringify(v1))
    const storeArgs = ['--store', store.uri, '--store-database', u, '--store-collection', 'defs']
    const stored = await runCli(t, ['apply', '-f', path.join(dir, 'v1.json'), ...storeArgs])
    outputs.push(stored.out, stored.err)
    assert.equal(stored.code, 0, stored.err)
    assert.match(stored.out, new RegExp(`stored ${u} as version 1`))
    const plain = { syncs: { [u]: { ...main([a]), http: { port, token: TOKEN } } } }
    await assert.rejects(writeDefinition(store, plain), (e) => e.code === 'ERR_CONFIG' && /^syncs\.\S+\.http\.token: holds a secret in plain text/.test(e.message) && !e.message.includes(TOKEN))

    const sync = new StoredSync(store, u, { heartbeatMs: 300 })
    const ctl = new StoredSync(store, `${u}_ctl`, { heartbeatMs: 300 })
    const events = []
    sync.on('event', (e) => events.push(e))
    await sync.start()
    await ctl.start()
    t.after(async () => {
      await sync.stop().catch(() => {})
      await ctl.stop().catch(() => {})
    })
    await waitFor('a copied', async () => (await esDocs(ctx.esUrl, `${u}_a`)).size === DOCS, 60000)
    assert.equal(sync.version, 1)

    // Version 2: b added (copied), a's field rule changed (re-copied behind the alias).
    await assert.rejects(writeDefinition(store, v2), (e) => e.code === 'ERR_CONFIG' && /destructive/.test(e.message))
    const seen = []
    let reading = true
    const reader = (async () => {
      while (reading) {
        const res = await es(ctx.esUrl, 'GET', `/${u}_a/_count`)
        seen.push(res.status === 200 ? res.body.count : `HTTP ${res.status}`)
        await new Promise((r) => setTimeout(r, 20))
      }
    })()
    const [written] = await writeDefinition(store, v2, { allowDestructive: true, by: 'test' })
    assert.equal(written.version, 2)
    await waitFor('version 2 applied', () => events.some((e) => e.type === 'definition' && e.outcome === 'applied' && e.version === 2), 120000)
    reading = false
    await reader
    assert.ok(seen.length > 3, `the reader polled (${seen.length})`)
    assert.deepEqual([...new Set(seen)], [DOCS], 'every read of the alias saw the whole index')
    assert.ok(!(await esDocs(ctx.esUrl, `${u}_a`)).get('1').x, 'the changed field rule applies to every document')
    assert.equal((await esDocs(ctx.esUrl, `${u}_b`)).size, DOCS, 'the added collection was copied')
    await db.collection('b').insertOne({ _id: 1000, n: 1000 })
    await waitFor('the added collection streams', async () => (await esDocs(ctx.esUrl, `${u}_b`)).has('1000'), 30000)

    // A version whose two writers read the same version: the second is refused.
    await assert.rejects(writeDefinition(store, v2, { allowDestructive: true, expectedVersion: 1 }), (e) => e.code === 'ERR_CONFLICT' && /at version 2, not 1/.test(e.message))

    // Version 3 has a tampered secret (written behind the writer's back): refused, the sync runs on.
    const doc = await db.collection('defs').findOne({ _id: u })
    const tampered = JSON.parse(doc.definition)
    tampered.mongo.uri = tamper(tampered.mongo.uri)
    await db.collection('defs').updateOne({ _id: u }, { $set: { definition: JSON.stringify(tampered), version: 3 } })
    const rejected = await waitFor('version 3 refused', () => events.find((e) => e.type === 'definition' && e.outcome === 'rejected'), 30000)
    assert.equal(rejected.version, 3)
    assert.equal(rejected.error.code, 'ERR_CONFIG')
    assert.match(rejected.error.message, /^mongo\.uri: cannot decrypt the sealed value: it was altered, or sealed for another key$/)
    assert.equal(sync.version, 2, 'the last good version runs')
    await db.collection('a').insertOne({ _id: 2000, n: 2000, x: 'gone' })
    await waitFor('the sync keeps streaming', async () => (await esDocs(ctx.esUrl, `${u}_a`)).has('2000'), 30000)
    assert.equal(sync.stats().state, 'streaming')

    // The history lists each change with its version and time.
    const history = await definitionHistory(store, u)
    outputs.push(JSON.stringify(history), JSON.stringify(events))
    const lines = history.map((h) => `${h.version} ${h.outcome}`)
    assert.deepEqual(lines, ['1 written', '1 applied', '2 written', '2 applied', '3 rejected'])
    assert.ok(history.every((h) => !Number.isNaN(Date.parse(h.at))), 'every record has its time')
    assert.match(history[3].summary, /re-copy\s+\S+\.a → \S+_a: field rules/)
    assert.match(history[3].summary, /\+ copy\s+\S+\.b → \S+_b/)
    const cliHistory = await runCli(t, ['history', '--name', u, ...storeArgs])
    outputs.push(cliHistory.out, cliHistory.err)
    assert.equal(cliHistory.code, 0, cliHistory.err)
    assert.match(cliHistory.out, /v3 rejected .*mongo\.uri: cannot decrypt/)

    // The status page: stored definitions and instances, start/stop behind the token.
    const http = async (url, method = 'GET', token) => {
      const res = await fetch(url, { method, headers: token ? { authorization: `Bearer ${token}` } : {} })
      const text = await res.text()
      outputs.push(text)
      return { status: res.status, body: text ? JSON.parse(text) : null }
    }
    const page = `http://127.0.0.1:${port}`
    assert.equal((await http(`${page}/definitions`)).status, 401)
    const listed = await http(`${page}/definitions`, 'GET', TOKEN)
    assert.equal(listed.status, 200)
    const mine = listed.body.definitions.find((d) => d.name === u)
    assert.deepEqual([mine.version, mine.appliedVersion, mine.desired, mine.collections], [3, 2, 'running', [`${u}.a`, `${u}.b`]])
    assert.deepEqual(mine.instances.map((i) => [i.id, i.version]), [[sync.id, 2]])
    assert.deepEqual(listed.body.definitions.find((d) => d.name === `${u}_ctl`).instances.map((i) => i.id), [ctl.id])
    const stop = `${page}/definitions/${u}_ctl/stop`
    assert.equal((await http(stop, 'POST')).status, 401, 'no token')
    assert.equal((await http(stop, 'POST', 'wrong-token-0123456789abc')).status, 401, 'a wrong token')
    assert.equal((await http(`http://127.0.0.1:${ctlPort}/definitions/${u}/stop`, 'POST')).status, 403, 'a server without a token starts or stops nothing')
    assert.equal((await http(`${page}/definitions/nope/stop`, 'POST', TOKEN)).status, 404)
    assert.equal((await http(stop, 'POST', TOKEN)).status, 200)
    await waitFor('the controlled sync stopped', () => ctl.stats()?.state === 'stopped' && ctl.desired === 'stopped', 30000)
    await db.collection('c').insertOne({ _id: 3000, n: 3000 })
    await new Promise((r) => setTimeout(r, 1500))
    assert.ok(!(await esDocs(ctx.esUrl, `${u}_c`)).has('3000'), 'a stopped sync writes nothing')
    assert.equal(sync.stats().state, 'streaming', 'the other sync runs on')
    assert.equal((await http(`${page}/definitions/${u}_ctl/start`, 'POST', TOKEN)).status, 200)
    await waitFor('the started sync caught up', async () => (await esDocs(ctx.esUrl, `${u}_c`)).has('3000'), 60000)
    const ctlHistory = (await definitionHistory(store, `${u}_ctl`)).map((h) => `${h.outcome} ${h.by}`)
    assert.deepEqual(ctlHistory.slice(-2), ['stopped http', 'started http'])

    // While an instance applies a version (its fence on the document), a write is refused.
    await db.collection('defs').updateOne({ _id: u }, { $set: { applying: { instance: 'other', version: 3, until: new Date(Date.now() + 60000) } } })
    const fenced = { syncs: { [u]: main([{ ...a, fields: { exclude: ['x'] } }, { namespace: `${u}.b`, index: `${u}_b` }]) } }
    await assert.rejects(writeDefinition(store, fenced, { allowDestructive: true }), (e) => e.code === 'ERR_CONFLICT' && /an instance is applying version 3/.test(e.message))
    await db.collection('defs').updateOne({ _id: u }, { $unset: { applying: '' } })
    assert.equal((await readDefinition(store, u)).version, 3, 'nothing was stored')

    // Secrets stay sealed in the store and never show in any output.
    const raw = JSON.stringify(await db.collection('defs').find().toArray()) + JSON.stringify(await readDefinition(store, u))
    assert.ok(!raw.includes(ctx.mongoUrl) && !raw.includes(TOKEN), 'the store holds sealed secrets only')
    const all = outputs.join('\n')
    for (const secret of [TOKEN, ctx.mongoUrl, key.privateKey]) assert.ok(!all.includes(secret), 'no secret in any output')
  })

  test('the history is in time order when records of one second come from different processes', async () => {
    // An ObjectId's bytes after its seconds are a per-process random value: two processes'
    // records of one second do not sort by time on _id.
    const u = unique('order')
    const store = { uri: ctx.mongoUrl, database: u }
    const second = 0x65000000
    const records = [
      { _id: new ObjectId(`${second.toString(16)}ffffffffff000001`), at: new Date(second * 1000 + 100), outcome: 'written' },
      { _id: new ObjectId(`${second.toString(16)}0000000000000001`), at: new Date(second * 1000 + 600), outcome: 'applied' },
    ]
    await ctx.mongo.db(u).collection('sync_definitions_history').insertMany(records.map((r) => ({ ...r, name: 's', version: 1, summary: '', by: 'x' })))
    assert.deepEqual((await definitionHistory(store, 's')).map((h) => h.outcome), ['written', 'applied'])
    assert.deepEqual((await definitionHistory(store, 's', 1)).map((h) => h.outcome), ['applied'], 'the limit keeps the newest')
  })

  test('the CLI runs a stored sync (run --store) until SIGTERM', async (t) => {
    const u = unique('livecli')
    const key = generateKeyPair()
    const env = { ...process.env, MES_PRIVATE_KEY: key.privateKey }
    process.env.MES_PRIVATE_KEY = key.privateKey
    t.after(() => delete process.env.MES_PRIVATE_KEY)
    const store = { uri: sealSecret(key.publicKey, ctx.mongoUrl), database: u }
    await ctx.mongo.db(u).collection('a').insertMany([{ _id: 1 }, { _id: 2 }])
    const sync = { mongo: { uri: store.uri }, elasticsearch: { node: ctx.esUrl }, collections: [{ namespace: `${u}.a`, index: `${u}_a` }] }
    await writeDefinition(store, { syncs: { [u]: sync } })
    const cli = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'scripts', 'cli.js')
    const child = spawn(process.execPath, [cli, 'run', '--store', store.uri, '--store-database', u, '--name', u], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    t.after(() => child.kill('SIGKILL'))
    const lines = []
    eachLine(child.stdout, (line) => lines.push(line))
    eachLine(child.stderr, (line) => lines.push(line))
    const exited = new Promise((resolve) => child.on('exit', resolve))
    await waitFor('the stored sync running', () => lines.some((l) => l.includes(`running stored sync ${u} (version 1)`)), 60000)
    assert.ok(lines.some((l) => l.includes('definition v1 applied')), lines.join('\n'))
    assert.equal((await esDocs(ctx.esUrl, `${u}_a`)).size, 2)
    child.kill('SIGTERM')
    assert.equal(await exited, 0, lines.join('\n'))
    assert.ok(!lines.join('\n').includes(ctx.mongoUrl), 'the opened URI is never printed')
  })
})
