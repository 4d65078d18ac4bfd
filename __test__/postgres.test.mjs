// PostgreSQL as the source: copy, then logical replication (pgoutput) into the Elasticsearch
// stand-in, against a private PostgreSQL 15 with wal_level=logical started for this file.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import crypto from 'node:crypto'

const require = createRequire(import.meta.url)
const { esDocs, runChild: runSyncChild, setup, unique, waitFor } = require('./helpers.js')
const { startPostgres } = require('../scripts/local-servers/postgres.js')
const { MongoElasticSync } = require('../index.js')
const { Client } = require('pg')


describe('PostgreSQL source', () => {
  const ctx = {}
  before(async () => {
    ctx.servers = await setup('postgres')
    ctx.pg = await startPostgres({ name: 'pgsrc' })
    ctx.sql = new Client(ctx.pg.url)
    await ctx.sql.connect()
  })
  after(async () => {
    await ctx.sql?.end()
    await ctx.pg?.stop()
    await ctx.servers?.teardown()
  })

  const options = (name, tables, extra = {}) => ({
    name,
    postgres: { uri: ctx.pg.url },
    tables,
    elasticsearch: { node: ctx.servers.esUrl },
    batch: { maxDocs: 200, flushIntervalMs: 100 },
    ...extra,
  })

  async function started(t, opts) {
    const sync = new MongoElasticSync(opts)
    t.after(() => sync.stop().catch(() => {}))
    await sync.start()
    return sync
  }

  test('copies every type, then streams inserts, updates (key changes, TOASTed columns), schema changes, deletes and truncates', async (t) => {
    const table = unique('items')
    const index = table
    await ctx.sql.query(`CREATE TYPE ${table}_mood AS ENUM ('sad', 'happy')`)
    await ctx.sql.query(`CREATE TABLE ${table} (
      id int PRIMARY KEY, name text, price numeric(30, 10), at timestamptz, local timestamp, data jsonb,
      tags text[], grid int[][], uid uuid, raw bytea, mood ${table}_mood, big text, ok boolean, n8 bigint, f float8)`)
    await ctx.sql.query(`INSERT INTO ${table}
      SELECT i, 'name ' || i, 12345678901234567890.0123456789 + i, '2024-05-01 10:00:00.123456+02', '2024-05-01 10:00:00.5',
             jsonb_build_object('n', i, '$date', 'not extended json', 'deep', jsonb_build_array('x', null)),
             ARRAY['a b', 'c"d', NULL], ARRAY[[1,2],[3,4]], '3f2504e0-4f89-11d3-9a0c-0305e82c3301', '\\xdeadbeef', 'happy',
             NULL, i % 2 = 0, 9007199254740993, 0.1
      FROM generate_series(1, 40) i`)
    const sync = await started(t, options(unique('pgsync'), [{ table: `public.${table}`, index }]))
    await waitFor('the copy', async () => (await esDocs(ctx.servers.esUrl, index)).size === 40, 60000, 250)
    const { n8, ...copied } = (await esDocs(ctx.servers.esUrl, index)).get('7')
    assert.equal(typeof n8, 'number', 'a bigint is a JSON number (beyond 2^53 as ES keeps it)')
    assert.deepEqual(copied, {
      id: 7,
      name: 'name 7',
      price: '12345678901234567897.0123456789',
      at: '2024-05-01T08:00:00.123456Z',
      local: '2024-05-01T10:00:00.5',
      data: { n: 7, $date: 'not extended json', deep: ['x', null] },
      tags: ['a b', 'c"d', null],
      grid: [[1, 2], [3, 4]],
      uid: '3f2504e0-4f89-11d3-9a0c-0305e82c3301',
      raw: Buffer.from([0xde, 0xad, 0xbe, 0xef]).toString('base64'),
      mood: 'happy',
      big: null,
      ok: false,
      f: 0.1,
    })

    // Incompressible, so stored out of line (TOASTed), not inline.
    const big = crypto.randomBytes(12000).toString('base64')
    await ctx.sql.query(`INSERT INTO ${table} (id, name, big) VALUES (100, 'new', $1)`, [big])
    await ctx.sql.query(`UPDATE ${table} SET name = 'renamed' WHERE id = 1`)
    await ctx.sql.query(`UPDATE ${table} SET id = 200 WHERE id = 2`)
    await ctx.sql.query(`DELETE FROM ${table} WHERE id = 3`)
    // Only `name` changes: the TOASTed `big` is not in the change (REPLICA IDENTITY DEFAULT).
    await ctx.sql.query(`UPDATE ${table} SET name = 'big one' WHERE id = 100`)
    await waitFor('the stream changes', async () => {
      const docs = await esDocs(ctx.servers.esUrl, index)
      return docs.get('1')?.name === 'renamed' && docs.has('200') && !docs.has('2') && !docs.has('3') && docs.get('100')?.name === 'big one' && docs
    }, 60000, 250)
    const docs = await esDocs(ctx.servers.esUrl, index)
    assert.equal(docs.get('100').big, big, 'an unchanged TOASTed column is read back')
    assert.equal(docs.size, 40)

    // Schema changes: an added column shows up from the next change, a dropped one goes.
    await ctx.sql.query(`ALTER TABLE ${table} ADD COLUMN extra text, DROP COLUMN mood`)
    await ctx.sql.query(`UPDATE ${table} SET extra = 'added' WHERE id = 5`)
    await waitFor('the added column', async () => (await esDocs(ctx.servers.esUrl, index)).get('5')?.extra === 'added', 60000, 250)
    assert.equal((await esDocs(ctx.servers.esUrl, index)).get('5').mood, undefined, 'the dropped column is gone from the rewritten document')

    await ctx.sql.query(`TRUNCATE ${table}`)
    await waitFor('the truncate to empty the index', async () => (await esDocs(ctx.servers.esUrl, index)).size === 0, 60000, 250)
    await ctx.sql.query(`INSERT INTO ${table} (id, name) VALUES (500, 'after truncate')`)
    await waitFor('a row after the truncate', async () => (await esDocs(ctx.servers.esUrl, index)).get('500')?.name === 'after truncate', 60000, 250)
    await sync.stop()
  })

  test('a composite key makes one string _id; a restart resumes from the checkpoint with what changed while stopped', async (t) => {
    const table = unique('lines')
    await ctx.sql.query(`CREATE TABLE ${table} (shop text, line int, qty int, PRIMARY KEY (shop, line))`)
    await ctx.sql.query(`INSERT INTO ${table} VALUES ('a:1', 1, 10), ('b', 2, 20)`)
    const opts = options(unique('pgcomp'), [`public.${table}`])
    const first = await started(t, opts)
    await waitFor('the copy', async () => (await esDocs(ctx.servers.esUrl, table)).size === 2, 60000, 250)
    assert.deepEqual([...(await esDocs(ctx.servers.esUrl, table)).keys()].sort(), ['a\\:1:1', 'b:2'])
    await first.stop()

    // While stopped, the slot keeps the WAL: the changes come through after the restart.
    const slot = (await ctx.sql.query(`SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name LIKE '%${table}'`)).rows
    assert.equal(slot.length, 1, 'one slot per table')
    await ctx.sql.query(`UPDATE ${table} SET qty = 11 WHERE shop = 'a:1'`)
    await ctx.sql.query(`INSERT INTO ${table} VALUES ('c', 3, 30)`)
    await ctx.sql.query(`DELETE FROM ${table} WHERE shop = 'b'`)
    const second = await started(t, opts)
    await waitFor('the changes made while stopped', async () => {
      const docs = await esDocs(ctx.servers.esUrl, table)
      return docs.size === 2 && docs.get('a\\:1:1')?.qty === 11 && docs.get('c:3')?.qty === 30
    }, 60000, 250)
    // Once applied and checkpointed, the slot confirms the new position (the server may free the WAL before it).
    const lsn = (text) => text.split('/').reduce((hi, lo) => BigInt('0x' + hi) * 2n ** 32n + BigInt('0x' + lo))
    await waitFor('the slot to confirm the applied changes', async () => {
      const [now] = (await ctx.sql.query(`SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`, [slot[0].slot_name])).rows
      return lsn(now.lsn) > lsn(slot[0].confirmed_flush_lsn)
    }, 30000, 250)
    await second.stop()
  })

  test('bad credentials and a missing publication fail start() with clear errors', async (t) => {
    const table = unique('plain')
    await ctx.sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
    const badUri = ctx.pg.url.replace(ctx.pg.password, 'wrong-password-123')
    const bad = new MongoElasticSync({ ...options(unique('pgbad'), [`public.${table}`]), postgres: { uri: badUri } })
    const err = await bad.start().then(() => null, (e) => e)
    assert.ok(err, 'start() rejects')
    assert.equal(err.code, 'ERR_MONGO_UNREACHABLE')
    assert.match(err.message, /password authentication failed/)
    assert.doesNotMatch(err.message, /wrong-password-123/)

    const noPub = new MongoElasticSync({ ...options(unique('pgnopub'), [`public.${table}`]), postgres: { uri: ctx.pg.url, publication: 'no_such_pub' } })
    const err2 = await noPub.start().then(() => null, (e) => e)
    assert.ok(err2, 'start() rejects')
    assert.equal(err2.code, 'ERR_CONFIG')
    assert.match(err2.message, /publication "no_such_pub" does not exist/)

    assert.throws(() => new MongoElasticSync({ ...options('x', [`public.${table}`]), postgres: { uri: ctx.pg.url, slotPrefx: 'a' } }), (e) => e.code === 'ERR_CONFIG' && /slotPrefx/.test(e.message))
    assert.throws(() => new MongoElasticSync({ ...options('x', [{ table: `public.${table}`, filter: { a: 1 } }]) }), (e) => e.code === 'ERR_CONFIG' && /filter/.test(e.message))
    assert.throws(() => new MongoElasticSync({ ...options('x', [`public.${table}`]), mongo: { uri: 'mongodb://127.0.0.1:1' } }), (e) => e.code === 'ERR_CONFIG' && /only one source/.test(e.message))
  })

  test('SIGKILL during the copy and the stream under a write load, then restart: nothing lost', async (t) => {
    const table = unique('load')
    await ctx.sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int, pad text)`)
    await ctx.sql.query(`INSERT INTO ${table} SELECT i, 0, repeat('p', 200) FROM generate_series(1, 3000) i`)
    const opts = options(unique('pgkill'), [`public.${table}`], { copyRangeMinDocs: 500, copyReaders: 4, batch: { maxDocs: 100, flushIntervalMs: 50 } })
    const writer = startWriter(table)
    t.after(() => writer.stop())

    const first = runChild(t, opts)
    await waitFor('a copy batch', () => first.events.some((e) => e.type === 'batch') || first.failed(), 60000, 5)
    assert.ok(!first.failed(), JSON.stringify(first.failed()))
    first.child.kill('SIGKILL')
    await first.exited

    const second = runChild(t, opts)
    await waitFor('streaming', () => second.events.some((e) => e.type === 'state' && e.state === 'streaming') || second.failed(), 120000, 20)
    assert.ok(!second.failed(), JSON.stringify(second.failed()))
    await waitFor('stream batches', () => second.events.filter((e) => e.type === 'batch' && e.phase === 'stream').length >= 3, 60000, 20)
    second.child.kill('SIGKILL')
    await second.exited

    const third = runChild(t, opts)
    await new Promise((r) => setTimeout(r, 1000))
    await writer.stop()
    const rows = new Map((await ctx.sql.query(`SELECT id, v FROM ${table}`)).rows.map((r) => [String(r.id), r.v]))
    t.diagnostic(`${writer.writes} writes during the run; ${rows.size} rows at the end`)
    let differences = []
    await waitFor('the index to equal the table', async () => {
      const docs = await esDocs(ctx.servers.esUrl, table)
      differences = [...rows].filter(([id, v]) => docs.get(id)?.v !== v).map(([id, v]) => `${id}: ${v} in the table, ${docs.get(id)?.v} indexed`)
      differences.push(...[...docs.keys()].filter((id) => !rows.has(id)).map((id) => `${id}: indexed, not in the table`))
      return differences.length === 0
    }, 180000, 500).catch((e) => assert.fail(`${e.message}; ${differences.length} differences, e.g. ${differences.slice(0, 5).join('; ')}`))
    third.child.kill('SIGTERM')
    await third.exited
  })

  /** Updates, inserts and deletes in a loop until stopped. */
  function startWriter(table) {
    const client = new Client(ctx.pg.url)
    let running = true
    const state = { writes: 0 }
    const done = (async () => {
      await client.connect()
      let next = 100000
      while (running) {
        const id = 1 + Math.floor(Math.random() * 3000)
        await client.query(`UPDATE ${table} SET v = v + 1 WHERE id = $1`, [id])
        await client.query(`INSERT INTO ${table} VALUES ($1, 1, 'new')`, [next++])
        if (next % 5 === 0) await client.query(`DELETE FROM ${table} WHERE id = $1`, [id + 1])
        state.writes += 3
        // A steady load the copy can outrun: the copy reads up to the table's end as it is then
        // (not the slot's exported snapshot), so an insert rate above its read rate keeps an
        // open-ended range going (README: PostgreSQL source, limits).
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      await client.end()
    })()
    state.stop = async () => {
      running = false
      await done
    }
    return state
  }

  function runChild(t, opts) {
    const run = runSyncChild(opts)
    t.after(() => run.child.kill('SIGKILL'))
    const failed = () => run.events.find((e) => e.type === 'start-failed' || (e.type === 'state' && e.state === 'failed'))
    return { ...run, failed }
  }
})
