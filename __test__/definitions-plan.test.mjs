// plan / apply of definitions against the local servers: the plan of each kind of change
// (golden files in fixtures/plans, names made stable), the exit codes CI relies on, and an
// apply of a mapping change while a reader polls the alias: it never sees a half-filled index.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { serversFor, unique, es, esDocs, runCli } = require('./helpers.js')
const { applyDefinition, generateKeyPair, planDefinition, sealSecret } = require('..')
const HERE = path.dirname(fileURLToPath(import.meta.url))
const GOLDEN = path.join(HERE, 'fixtures', 'plans')
const DOCS = 120

/** The CLI, with the sync's private key in its environment (the definitions seal the MongoDB URI). */
const cli = (t, args, env = process.env) => runCli(t, args, { env, timeoutMs: 180000 })

/** `text` with the run's unique name made stable, compared with the golden file `name`. */
function assertGolden(name, text, u) {
  const stable = text.replaceAll(u, '<u>')
  const file = path.join(GOLDEN, name)
  if (process.env.UPDATE_GOLDEN === '1') fs.writeFileSync(file, stable)
  assert.equal(stable, fs.readFileSync(file, 'utf8'), `golden file ${name} (UPDATE_GOLDEN=1 rewrites it)`)
}

describe('plan and apply', () => {
  const ctx = serversFor('definitions-plan')

  /** Version 1 and 2 of a definition of one sync: every kind of change between them. */
  function definitions(u, publicKey) {
    const base = { mongo: { uri: sealSecret(publicKey, ctx.mongoUrl) }, elasticsearch: { node: ctx.esUrl } }
    const ns = (c) => `${u}.${c}`
    const v1 = [
      { namespace: ns('a'), index: `${u}_a`, mappings: { properties: { n: { type: 'long' } } } },
      { namespace: ns('b'), index: `${u}_b` },
      { namespace: ns('c'), index: `${u}_c` },
      { namespace: ns('e'), index: `${u}_e` },
    ]
    const v2 = [
      { namespace: ns('a'), index: `${u}_a`, mappings: { properties: { n: { type: 'keyword' } } } },
      { namespace: ns('b'), index: `${u}_b`, mappings: { properties: { extra: { type: 'keyword' } } } },
      { namespace: ns('c'), index: `${u}_c`, fields: { exclude: ['x'] } },
      { namespace: ns('d'), index: `${u}_d` },
    ]
    return { v1: { version: 1, syncs: { [u]: { ...base, collections: v1 } } }, v2: { version: 1, syncs: { [u]: { ...base, collections: v2 } } } }
  }

  async function seed(u) {
    const db = ctx.mongo.db(u)
    const docs = Array.from({ length: DOCS }, (_, i) => ({ _id: i + 1, n: i, x: `x${i}` }))
    for (const c of ['a', 'b', 'c', 'd', 'e']) await db.collection(c).insertMany(docs)
  }

  test('each kind of change has its plan; apply carries it out; a reader of the alias never sees a half-filled index', async (t) => {
    const u = unique('plan')
    await seed(u)
    const key = generateKeyPair()
    const { v1, v2 } = definitions(u, key.publicKey)
    const env = { ...process.env, MES_PRIVATE_KEY: key.privateKey }
    process.env.MES_PRIVATE_KEY = key.privateKey
    t.after(() => delete process.env.MES_PRIVATE_KEY)
    const outputs = []
    const run = async (...args) => {
      const result = await cli(t, args, env)
      outputs.push(result.out, result.err)
      return result
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-plan-'))
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
    const files = { v1: path.join(dir, 'v1.json'), v2: path.join(dir, 'v2.json') }
    fs.writeFileSync(files.v1, JSON.stringify(v1))
    fs.writeFileSync(files.v2, JSON.stringify(v2))

    const fresh = await run('plan', '-f', files.v1)
    assert.equal(fresh.code, 0, fresh.err)
    assertGolden('new.txt', fresh.out, u)

    const applied = await run('apply', '-f', files.v1)
    assert.equal(applied.code, 0, applied.err)
    for (const c of ['a', 'b', 'c', 'e']) assert.equal((await esDocs(ctx.esUrl, `${u}_${c}`)).size, DOCS, c)

    const same = await run('plan', '-f', files.v1)
    assert.equal(same.code, 0, same.err)
    assertGolden('unchanged.txt', same.out, u)

    const changes = await run('plan', '-f', files.v2)
    assert.equal(changes.code, 3, 'a destructive plan exits 3')
    assertGolden('changes.txt', changes.out, u)
    const json = await run('plan', '-f', files.v2, '--json', '--allow-destructive')
    assert.equal(json.code, 0, json.err)
    assertGolden('changes.json', json.out, u)
    assert.deepEqual((await planDefinition(v2)).map((p) => p.steps.map((s) => s.kind)), [['recopy', 'mapFields', 'recopy', 'copy', 'remove']])

    const refused = await run('apply', '-f', files.v2)
    assert.equal(refused.code, 3)
    assert.match(refused.err, /nothing applied: the plan holds destructive steps/)
    const mapping = async () => (await es(ctx.esUrl, 'GET', `/${u}_a/_mapping`)).body
    assert.equal(Object.values(await mapping())[0].mappings.properties.n.type, 'long', 'a refused apply changed nothing')

    // A reader polls the alias through the whole apply: always every document, never a 404.
    const seen = []
    let reading = true
    const reader = (async () => {
      while (reading) {
        const res = await es(ctx.esUrl, 'GET', `/${u}_a/_count`)
        seen.push(res.status === 200 ? res.body.count : `HTTP ${res.status}`)
        await new Promise((r) => setTimeout(r, 20))
      }
    })()
    const done = await run('apply', '-f', files.v2, '--allow-destructive')
    reading = false
    await reader
    assert.equal(done.code, 0, done.err)
    assert.ok(seen.length > 3, `the reader polled (${seen.length})`)
    assert.deepEqual([...new Set(seen)], [DOCS], 'every read saw the whole index')
    const after = await mapping()
    assert.deepEqual(Object.keys(after), [`${u}_a-1`], 'the alias points at the re-copied index')
    assert.equal(after[`${u}_a-1`].mappings.properties.n.type, 'keyword')
    assert.ok(!(await esDocs(ctx.esUrl, `${u}_c`)).get('1').x, 'the changed field rule applied to every document')
    assert.equal((await esDocs(ctx.esUrl, `${u}_d`)).size, DOCS, 'the added collection was copied')
    const checkpoints = await ctx.mongo.db('mongo_elastic_sync').collection('checkpoints').find({ name: u }).toArray()
    assert.deepEqual(checkpoints.map((c) => c.namespace).sort(), ['a', 'b', 'c', 'd'].map((c) => `${u}.${c}`), "the removed collection's checkpoint is gone")
    const history = await ctx.mongo.db('mongo_elastic_sync').collection('definitions_history').find({ name: u }).sort({ version: 1 }).toArray()
    assert.deepEqual(history.map((h) => h.version), [1, 2], 'each apply is recorded with its version')

    const settled = await run('plan', '-f', files.v2)
    assert.equal(settled.code, 0, settled.err)
    assertGolden('applied.txt', settled.out, u)
    assert.ok(!outputs.join('').includes(ctx.mongoUrl), 'the opened MongoDB URI is never printed')
  })
  // The plan compared mappings only: settings and aliases changed in a definition planned
  // "unchanged" and never reached the existing index.
  test('changed settings and a new alias: dynamic ones applied in place, a static one re-copies; then nothing left to do', async () => {
    const u = unique('plansettings')
    await seed(u)
    const sync = (collections) => ({ version: 1, syncs: { [u]: { mongo: { uri: ctx.mongoUrl }, elasticsearch: { node: ctx.esUrl }, collections } } })
    const v1 = sync([
      { namespace: `${u}.a`, index: `${u}_a`, settings: { number_of_replicas: 0, refresh_interval: '1s' } },
      { namespace: `${u}.b`, index: `${u}_b`, settings: { number_of_shards: 1 } },
    ])
    const v2 = sync([
      { namespace: `${u}.a`, index: `${u}_a`, settings: { number_of_replicas: 0, refresh_interval: '5s' }, alias: `${u}_a_read` },
      { namespace: `${u}.b`, index: `${u}_b`, settings: { number_of_shards: 2 } },
    ])
    await applyDefinition(v1)
    const [unchanged] = await planDefinition(v1)
    assert.deepEqual(unchanged.steps.map((s) => s.kind), ['unchanged', 'unchanged'], unchanged.text)

    const [plan] = await planDefinition(v2)
    assertGolden('settings.txt', plan.text, u)
    assert.deepEqual(plan.steps[0], {
      kind: 'updateIndex', namespace: `${u}.a`, index: `${u}_a`, alias: `${u}_a_read`, fields: [],
      settings: [{ key: 'index.refresh_interval', from: '1s', to: '5s', dynamic: true }],
    })
    assert.equal(plan.steps[1].kind, 'recopy')
    assert.ok(plan.destructive)
    await assert.rejects(applyDefinition(v2), (e) => e.code === 'ERR_CONFIG' && /destructive/.test(e.message))

    await applyDefinition(v2, { allowDestructive: true })
    const settings = async (index) => Object.entries((await es(ctx.esUrl, 'GET', `/${index}/_settings?flat_settings=true`)).body)[0]
    const [aName, aSettings] = await settings(`${u}_a`)
    assert.equal(aName, `${u}_a`, 'changed in place: the same index')
    assert.equal(aSettings.settings['index.refresh_interval'], '5s')
    assert.deepEqual(Object.keys((await es(ctx.esUrl, 'GET', `/${u}_a/_alias`)).body[`${u}_a`].aliases), [`${u}_a_read`])
    assert.equal((await es(ctx.esUrl, 'GET', `/${u}_a_read/_count`)).body.count, DOCS, 'the new alias reads the index')
    const [bName, bSettings] = await settings(`${u}_b`)
    assert.equal(bName, `${u}_b-1`, 're-copied into a new index behind the alias')
    assert.equal(bSettings.settings['index.number_of_shards'], '2')
    assert.equal((await esDocs(ctx.esUrl, `${u}_b`)).size, DOCS)

    const [settled] = await planDefinition(v2)
    assert.deepEqual(settled.steps.map((s) => s.kind), ['unchanged', 'unchanged'], settled.text)
  })
})
