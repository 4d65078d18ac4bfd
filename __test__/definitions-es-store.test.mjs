// Stored definitions in an Elasticsearch index (configStore.elasticsearch), against the local
// servers: compare-and-set writes (two writers of one version: one wins), the apply fence, the
// history (oldest first, with a limit), registrations with heartbeat times, a running StoredSync
// picking up a new version by polling, the status page's routes over an ES store, sealed secrets
// only, and contradictory store options refused naming the path.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { serversFor, unique, es, esDocs, waitFor, freePort, runCli, serviceKey } = require('./helpers.js')
const { StoredSync, writeDefinition, definitionHistory, readDefinition, storedDefinitions } = require('..')
const DOCS = 40
const TOKEN = 'esstore-token-0123456789abcdef'

describe('stored definitions in an Elasticsearch index', () => {
  const ctx = serversFor('definitions-es-store')

  test('contradictory or unknown store options are ERR_CONFIG naming the path', async () => {
    const node = { node: ctx.esUrl }
    const cases = [
      [{ uri: ctx.mongoUrl, elasticsearch: node }, /^configStore\.uri: a MongoDB store's option; with configStore\.elasticsearch/],
      [{ elasticsearch: node, database: 'd' }, /^configStore\.database: a MongoDB store's option/],
      [{ uri: ctx.mongoUrl, index: 'defs' }, /^configStore\.index: an Elasticsearch store's option/],
      [{ elasticsearch: node, index: 'Bad' }, /^configStore\.index: index name "Bad" contains 'B'/],
      [{ elasticsearch: { ...node, nodez: 1 } }, /^configStore\.elasticsearch\.nodez/],
    ]
    for (const [store, message] of cases) {
      await assert.rejects(readDefinition(store, 'x'), (e) => e.code === 'ERR_CONFIG' && message.test(e.message), JSON.stringify(store))
    }
    const unreachable = { elasticsearch: { node: `http://127.0.0.1:${await freePort()}` } }
    await assert.rejects(readDefinition(unreachable, 'x'), (e) => e.code === 'ERR_ES_UNREACHABLE' && /^configStore: cannot reach/.test(e.message))
  })

  test('versions are compare-and-set, fenced, audited; a running sync follows its stored definition', async (t) => {
    const u = unique('esstore')
    const { key, seal } = serviceKey(t)
    const store = { elasticsearch: { node: ctx.esUrl }, index: `${u}-defs` }
    const db = ctx.mongo.db(u)
    const docs = Array.from({ length: DOCS }, (_, i) => ({ _id: i + 1, n: i }))
    for (const c of ['a', 'b']) await db.collection(c).insertMany(docs)
    const port = await freePort()
    const outputs = []
    const sync = (collections) => ({
      mongo: { uri: seal(ctx.mongoUrl) },
      elasticsearch: { node: ctx.esUrl },
      batch: { flushIntervalMs: 100 },
      http: { port, token: seal(TOKEN) },
      collections,
    })
    const a = { namespace: `${u}.a`, index: `${u}_a` }
    const b = { namespace: `${u}.b`, index: `${u}_b` }
    const v1 = { syncs: { [u]: sync([a]) } }
    const v2 = { syncs: { [u]: sync([a, b]) } }

    // A plain secret is refused; version 1 is created; a writer that expected none conflicts.
    const plain = { syncs: { [u]: { ...sync([a]), http: { port, token: TOKEN } } } }
    await assert.rejects(writeDefinition(store, plain), (e) => e.code === 'ERR_CONFIG' && /^syncs\.\S+\.http\.token: holds a secret in plain text/.test(e.message) && !e.message.includes(TOKEN))
    const [w1] = await writeDefinition(store, v1, { by: 'test' })
    assert.equal(w1.version, 1)
    await assert.rejects(writeDefinition(store, v1, { expectedVersion: 0 }), (e) => e.code === 'ERR_CONFLICT' && /at version 1, not 0/.test(e.message))
    const read1 = await readDefinition(store, u)
    assert.deepEqual([read1.version, read1.desired, read1.appliedVersion], [1, 'running', null])
    assert.match(read1.definition.mongo.uri, /^enc:age:/)

    // A running sync from the ES store registers itself and copies version 1.
    const running = new StoredSync(store, u, { heartbeatMs: 300 })
    const events = []
    running.on('event', (e) => events.push(e))
    await running.start()
    t.after(() => running.stop().catch(() => {}))
    await waitFor('a copied', async () => (await esDocs(ctx.esUrl, `${u}_a`)).size === DOCS, 60000)
    assert.equal(running.version, 1)
    const listed = await waitFor('registered', async () => (await storedDefinitions(store)).find((d) => d.name === u && d.instances.length === 1))
    assert.deepEqual([listed.version, listed.appliedVersion, listed.collections], [1, 1, [`${u}.a`]])
    assert.equal(listed.instances[0].id, running.id)
    assert.ok(Date.now() - Date.parse(listed.instances[0].heartbeatAt) < 15000, `a recent heartbeat (${listed.instances[0].heartbeatAt})`)

    // Version 2 adds b: picked up by polling, copied, streamed.
    const [w2] = await writeDefinition(store, v2, { by: 'test' })
    assert.equal(w2.version, 2)
    await waitFor('version 2 applied', () => events.some((e) => e.type === 'definition' && e.outcome === 'applied' && e.version === 2), 120000)
    assert.equal((await esDocs(ctx.esUrl, `${u}_b`)).size, DOCS, 'the added collection was copied')
    await db.collection('b').insertOne({ _id: 1000, n: 1000 })
    await waitFor('the added collection streams', async () => (await esDocs(ctx.esUrl, `${u}_b`)).has('1000'), 30000)

    // Two writers of version 2 at once: exactly one stores version 3.
    const raced = await Promise.allSettled([1, 2].map(() => writeDefinition(store, v2, { expectedVersion: 2, by: 'racer' })))
    assert.deepEqual(raced.map((r) => r.status).sort(), ['fulfilled', 'rejected'], JSON.stringify(raced.map((r) => r.reason?.message)))
    const lost = raced.find((r) => r.status === 'rejected').reason
    assert.equal(lost.code, 'ERR_CONFLICT')
    assert.match(lost.message, /at version 3, not 2/)
    await waitFor('version 3 applied', () => events.some((e) => e.type === 'definition' && e.outcome === 'applied' && e.version === 3), 60000)

    // While an instance applies a version (its fence on the document), a write is refused.
    const path = `/${u}-defs/_doc/${u}`
    const current = (await es(ctx.esUrl, 'GET', path)).body
    const fenced = { ...current._source, applying: { instance: 'other', version: 3, until: Date.now() + 60000 } }
    const put = await es(ctx.esUrl, 'PUT', `${path}?refresh=true&if_seq_no=${current._seq_no}&if_primary_term=${current._primary_term}`, fenced)
    assert.equal(put.status, 200, JSON.stringify(put.body))
    await assert.rejects(writeDefinition(store, v1, { allowDestructive: true, by: 'test' }), (e) => e.code === 'ERR_CONFLICT' && /an instance is applying version 3/.test(e.message))
    const unfenced = (await es(ctx.esUrl, 'GET', path)).body
    const { applying, ...rest } = unfenced._source
    assert.equal(applying.instance, 'other')
    assert.equal((await es(ctx.esUrl, 'PUT', `${path}?refresh=true&if_seq_no=${unfenced._seq_no}&if_primary_term=${unfenced._primary_term}`, rest)).status, 200)
    assert.equal((await readDefinition(store, u)).version, 3, 'nothing was stored')

    // The history, oldest first, each record with its time; with a limit, the newest ones.
    const history = await definitionHistory(store, u)
    outputs.push(JSON.stringify(history), JSON.stringify(events))
    assert.deepEqual(
      history.map((h) => `${h.version} ${h.outcome}`),
      ['1 written', '1 applied', '2 written', '2 applied', '3 written', '3 applied'],
    )
    assert.ok(history.every((h) => !Number.isNaN(Date.parse(h.at))), 'every record has its time')
    assert.deepEqual(history.filter((h) => h.outcome === 'written').map((h) => h.by), ['test', 'test', 'racer'])
    assert.match(history[3].summary, /\+ copy\s+\S+\.b → \S+_b/)
    assert.deepEqual((await definitionHistory(store, u, 2)).map((h) => `${h.version} ${h.outcome}`), ['3 written', '3 applied'])

    // The status page of the sync lists the ES store's definitions behind the token (the
    // registration shows version 3 from the heartbeat after the apply).
    const mine = await waitFor('the page lists version 3 running', async () => {
      const res = await fetch(`http://127.0.0.1:${port}/definitions`, { headers: { authorization: `Bearer ${TOKEN}` } })
      const page = await res.text()
      outputs.push(page)
      assert.equal(res.status, 200, page)
      const found = JSON.parse(page).definitions.find((d) => d.name === u)
      return found.instances[0]?.version === 3 && found
    })
    assert.deepEqual([mine.version, mine.appliedVersion, mine.instances.map((i) => [i.id, i.version])], [3, 3, [[running.id, 3]]])

    // The CLI reads an Elasticsearch store given as --store http(s)://node.
    const cli = await runCli(t, ['history', '--name', u, '--store', ctx.esUrl, '--store-index', `${u}-defs`, '--json'])
    outputs.push(cli.out, cli.err)
    assert.equal(cli.code, 0, cli.err)
    assert.deepEqual(JSON.parse(cli.out).map((h) => h.version), [1, 1, 2, 2, 3, 3])

    // Stopping removes the registration; the store holds sealed secrets only.
    await running.stop()
    assert.deepEqual((await storedDefinitions(store)).find((d) => d.name === u).instances, [])
    const raw = JSON.stringify((await es(ctx.esUrl, 'POST', `/${u}-defs*/_search`, { size: 100 })).body)
    assert.ok(raw.includes('enc:age:'), 'the stored definitions were searched')
    assert.ok(!raw.includes(ctx.mongoUrl) && !raw.includes(TOKEN), 'the store holds sealed secrets only')
    for (const secret of [TOKEN, ctx.mongoUrl, key.privateKey]) assert.ok(!outputs.join('\n').includes(secret), 'no secret in any output')
  })
})
