// PostgreSQL as the source: copy, then logical replication (pgoutput) into the Elasticsearch
// stand-in, against a private PostgreSQL 15 with wal_level=logical started for this file.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import crypto from 'node:crypto'

const require = createRequire(import.meta.url)
const { esDocs, runChild: runSyncChild, setup, unique, waitFor } = require('./helpers.js')
const { startPostgres } = require('../scripts/local-servers/postgres.js')
const { makeCerts } = require('./tls-fixtures.js')
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

  test('the copy reads the snapshot the slot exported: changes made during the copy come only through the stream', async (t) => {
    const table = unique('snap')
    await ctx.sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int)`)
    await ctx.sql.query(`INSERT INTO ${table} SELECT i, 0 FROM generate_series(1, 3000) i`)
    const sync = new MongoElasticSync(options(unique('pgsnap'), [`public.${table}`], { copyRangeMinDocs: 500, copyReaders: 4, batch: { maxDocs: 50, flushIntervalMs: 50 } }))
    t.after(() => sync.stop().catch(() => {}))
    const copied = new Map()
    sync.setTransform((doc, c) => {
      if (c.phase === 'copy') copied.set(doc.id, doc.v)
      return doc
    })
    const events = []
    sync.onEvent((e) => events.push(e))
    await sync.start()
    await waitFor('a copy batch', () => events.some((e) => e.type === 'batch' && e.phase === 'copy'), 60000, 5)
    // During the copy: every row changes, rows are added past the last key, and some go.
    await ctx.sql.query(`UPDATE ${table} SET v = 1`)
    await ctx.sql.query(`INSERT INTO ${table} SELECT i, 2 FROM generate_series(3001, 4000) i`)
    await ctx.sql.query(`DELETE FROM ${table} WHERE id BETWEEN 2990 AND 3010`)
    assert.ok(!events.some((e) => e.type === 'progress' && e.done), 'the changes were made while the copy ran')
    const rows = new Map((await ctx.sql.query(`SELECT id, v FROM ${table}`)).rows.map((r) => [String(r.id), r.v]))
    await waitFor('the index to equal the table', async () => {
      const docs = await esDocs(ctx.servers.esUrl, table)
      return docs.size === rows.size && [...rows].every(([id, v]) => docs.get(id)?.v === v)
    }, 120000, 250)
    const done = events.find((e) => e.type === 'progress' && e.done)
    assert.equal(copied.size, 3000, 'exactly the rows of the snapshot were copied')
    assert.deepEqual([...new Set(copied.values())], [0], 'every row as it was at the slot\'s consistent point')
    assert.equal(done.copied, 3000)
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

  test('a slot whose WAL the server removed during a long stop: ERR_HISTORY_LOST naming the slot, or a re-copy with onHistoryLost: resync', async (t) => {
    const table = unique('walgone')
    await ctx.sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int)`)
    await ctx.sql.query(`INSERT INTO ${table} SELECT i, 0 FROM generate_series(1, 50) i`)
    const opts = options(unique('pgwal'), [`public.${table}`])
    const first = await started(t, opts)
    await waitFor('the copy', async () => (await esDocs(ctx.servers.esUrl, table)).size === 50, 60000, 250)
    await first.stop()
    const [slot] = (await ctx.sql.query(`SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '%${table}'`)).rows

    // The server may keep at most 1 MB of WAL for slots: a long stop under writes loses it.
    await ctx.sql.query(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
    await ctx.sql.query('SELECT pg_reload_conf()')
    t.after(async () => {
      await ctx.sql.query('ALTER SYSTEM RESET max_slot_wal_keep_size')
      await ctx.sql.query('SELECT pg_reload_conf()')
    })
    await ctx.sql.query(`UPDATE ${table} SET v = 1 WHERE id <= 10`)
    const filler = unique('walfill')
    await ctx.sql.query(`CREATE TABLE ${filler} (pad text)`)
    await waitFor('the slot\'s WAL removed', async () => {
      await ctx.sql.query(`INSERT INTO ${filler} SELECT repeat('w', 1000) FROM generate_series(1, 4000)`)
      await ctx.sql.query('SELECT pg_switch_wal()')
      await ctx.sql.query('CHECKPOINT')
      const [now] = (await ctx.sql.query('SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1', [slot.slot_name])).rows
      return now.wal_status === 'lost'
    }, 60000, 0)

    const failing = new MongoElasticSync(opts)
    const err = await failing.start().then(() => null, (e) => e)
    assert.ok(err, 'start() rejects')
    assert.equal(err.code, 'ERR_HISTORY_LOST')
    assert.ok(err.message.includes(slot.slot_name) && /WAL was removed/.test(err.message), err.message)

    const resync = await started(t, { ...opts, onHistoryLost: 'resync' })
    await waitFor('the re-copy with the changes made while stopped', async () => {
      const docs = await esDocs(ctx.servers.esUrl, table)
      return docs.size === 50 && [...docs.values()].filter((d) => d.v === 1).length === 10
    }, 60000, 250)
    await resync.stop()
  })

  test('polling mode (postgres.poll): rows by updated_at, ties by key, resumed from the cursor; no slot; deletes not seen', async (t) => {
    const table = unique('polled')
    await ctx.sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int, updated_at timestamptz NOT NULL DEFAULT now())`)
    // 40 rows sharing one timestamp: read over several polls, the key breaks the ties.
    await ctx.sql.query(`INSERT INTO ${table} SELECT i, 0, '2024-01-01T00:00:00Z' FROM generate_series(1, 40) i`)
    const name = unique('pgpoll')
    const opts = options(name, [`public.${table}`], {
      postgres: { uri: ctx.pg.url, poll: { column: 'updated_at', intervalMs: 100, settleMs: 300 } },
      batch: { maxDocs: 7, flushIntervalMs: 50 },
    })
    const first = await started(t, opts)
    await waitFor('the first poll', async () => (await esDocs(ctx.servers.esUrl, table)).size === 40, 60000, 250)
    await ctx.sql.query(`UPDATE ${table} SET v = 1, updated_at = now() WHERE id <= 10`)
    await ctx.sql.query(`INSERT INTO ${table} (id, v) VALUES (41, 5)`)
    await ctx.sql.query(`DELETE FROM ${table} WHERE id = 40`)
    await waitFor('the polled changes', async () => {
      const docs = await esDocs(ctx.servers.esUrl, table)
      return [...Array(10).keys()].every((i) => docs.get(String(i + 1))?.v === 1) && docs.get('41')?.v === 5
    }, 60000, 250)
    const docs = await esDocs(ctx.servers.esUrl, table)
    assert.equal(docs.get('11').v, 0)
    assert.ok(docs.has('40'), 'a deleted row stays indexed: polling does not see deletes (documented)')
    const slots = await ctx.sql.query(`SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE $1`, [`%${table}`])
    assert.equal(slots.rows.length, 0, 'no replication slot')
    await first.stop()

    await ctx.sql.query(`UPDATE ${table} SET v = 2, updated_at = now() WHERE id = 20`)
    const second = await started(t, opts)
    await waitFor('a change made while stopped', async () => (await esDocs(ctx.servers.esUrl, table)).get('20')?.v === 2, 60000, 250)
    await second.stop()

    const bad = async (column) => new MongoElasticSync({ ...opts, name: unique('pgpollbad'), postgres: { uri: ctx.pg.url, poll: { column } } }).start().then(() => null, (e) => e)
    const missing = await bad('nope')
    assert.equal(missing?.code, 'ERR_CONFIG')
    assert.match(missing.message, /postgres\.poll\.column: table public\.\S+ has no column "nope"/)
    const notTime = await bad('v')
    assert.equal(notTime?.code, 'ERR_CONFIG')
    assert.match(notTime.message, /must be a timestamp/)
    assert.throws(() => new MongoElasticSync({ ...opts, postgres: { uri: ctx.pg.url, poll: { column: 'updated_at', every: 5 } } }), (e) => e.code === 'ERR_CONFIG' && /postgres\.poll\.every/.test(e.message))
  })

  test("polling mode with mode: 'stream': follows from start() (or startAt), sees inserts and updates, a restart resumes from the saved cursor", async (t) => {
    const table = unique('pollstream')
    await ctx.sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int, updated_at timestamptz NOT NULL DEFAULT now())`)
    await ctx.sql.query(`INSERT INTO ${table} SELECT i, 0, '2024-01-01T00:00:00Z' FROM generate_series(1, 5) i`)
    await ctx.sql.query(`INSERT INTO ${table} SELECT i, 0, '2025-06-01T00:00:00Z' FROM generate_series(6, 8) i`)
    const poll = { column: 'updated_at', intervalMs: 100, settleMs: 300 }
    const opts = options(unique('pgpollstream'), [`public.${table}`], { postgres: { uri: ctx.pg.url, poll }, mode: 'stream' })
    const first = await started(t, opts)
    // No copy: rows not changed since start() are never read.
    await ctx.sql.query(`INSERT INTO ${table} (id, v) VALUES (9, 9)`)
    await ctx.sql.query(`UPDATE ${table} SET v = 1, updated_at = now() WHERE id = 1`)
    await waitFor('the insert and the update made after start()', async () => {
      const docs = await esDocs(ctx.servers.esUrl, table)
      return docs.get('9')?.v === 9 && docs.get('1')?.v === 1
    }, 60000, 250)
    // Several polls later, still only those two.
    await new Promise((resolve) => setTimeout(resolve, 1000))
    assert.deepEqual([...(await esDocs(ctx.servers.esUrl, table)).keys()].sort(), ['1', '9'], 'followed from start(): the rows as they were before it are not indexed')
    await first.stop()

    // While stopped: a restart resumes after the saved cursor, not from its own start.
    await ctx.sql.query(`UPDATE ${table} SET v = 2, updated_at = now() WHERE id = 2`)
    await ctx.sql.query(`INSERT INTO ${table} (id, v) VALUES (10, 10)`)
    const second = await started(t, opts)
    await waitFor('the changes made while stopped', async () => {
      const docs = await esDocs(ctx.servers.esUrl, table)
      return docs.get('2')?.v === 2 && docs.get('10')?.v === 10
    }, 60000, 250)
    await ctx.sql.query(`UPDATE ${table} SET v = 11, updated_at = now() WHERE id = 9`)
    await waitFor('a change after the restart', async () => (await esDocs(ctx.servers.esUrl, table)).get('9')?.v === 11, 60000, 250)
    assert.deepEqual([...(await esDocs(ctx.servers.esUrl, table)).keys()].sort(), ['1', '10', '2', '9'])
    await second.stop()

    // startAt: the rows whose column is at or after it, then the changes.
    const index = unique('pollstart')
    const fromStart = await started(t, { ...options(unique('pgpollstart'), [{ table: `public.${table}`, index }], { postgres: { uri: ctx.pg.url, poll }, mode: 'stream', startAt: '2025-01-01T00:00:00Z' }) })
    await waitFor('the rows from startAt on', async () => (await esDocs(ctx.servers.esUrl, index)).size === 7, 60000, 250)
    assert.deepEqual([...(await esDocs(ctx.servers.esUrl, index)).keys()].sort(), ['1', '10', '2', '6', '7', '8', '9'], 'rows 3-5 (2024) are before startAt')
    await ctx.sql.query(`UPDATE ${table} SET v = 3, updated_at = now() WHERE id = 3`)
    await waitFor('a change after startAt', async () => (await esDocs(ctx.servers.esUrl, index)).get('3')?.v === 3, 60000, 250)
    await fromStart.stop()
    assert.throws(
      () => new MongoElasticSync(options(unique('pgstartat'), [`public.${table}`], { mode: 'stream', startAt: '2025-01-01T00:00:00Z' })),
      (e) => e.code === 'ERR_CONFIG' && /startAt: not available with PostgreSQL logical replication/.test(e.message),
      'logical replication cannot start at a time: refused, not a slot silently starting elsewhere',
    )
  })

  /** A private PostgreSQL with TLS (`clientCerts`: its TLS sessions must present a certificate of the test CA), a table of two rows and a SQL client, all gone after the test. */
  async function tlsPostgres(t, name, clientCerts) {
    const certs = makeCerts()
    t.after(() => certs.cleanup())
    const ssl = { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile, ...(clientCerts ? { clientCaFile: certs.caFile } : {}) }
    const pg = await startPostgres({ name, ssl })
    const sql = new Client(pg.url)
    sql.on('error', () => {})
    t.after(async () => {
      await sql.end().catch(() => {})
      await pg.stop()
    })
    await sql.connect()
    const table = unique(name)
    await sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v text)`)
    await sql.query(`INSERT INTO ${table} VALUES (1, 'a'), (2, 'b')`)
    return { certs, pg, sql, table }
  }

  /** Runs a sync of `opts` through a copy of the two rows and a streamed third; resolves with its sessions' TLS state. */
  async function copyAndStream(t, sql, table, opts) {
    const sync = await started(t, opts)
    await waitFor('the copy', async () => (await esDocs(ctx.servers.esUrl, table)).size === 2, 60000, 250)
    await sql.query(`INSERT INTO ${table} VALUES (3, 'c')`)
    await waitFor('a streamed row', async () => (await esDocs(ctx.servers.esUrl, table)).get('3')?.v === 'c', 60000, 250)
    const sessions = (
      await sql.query(`SELECT a.backend_type, s.ssl, s.client_dn FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'mongo-elastic-sync'`)
    ).rows
    assert.ok(sessions.some((s) => s.backend_type === 'walsender'), JSON.stringify(sessions))
    await sync.stop()
    return sessions
  }

  test('TLS with postgres.tls.caFile: copy and stream over verified TLS; a wrong CA is a clear error', async (t) => {
    const { certs, pg, sql, table } = await tlsPostgres(t, 'pgtls', false)
    const opts = { ...options(unique('pgtls'), [`public.${table}`]), postgres: { uri: pg.url, tls: { caFile: certs.caFile } } }
    const sessions = await copyAndStream(t, sql, table, opts)
    assert.ok(sessions.length >= 2 && sessions.every((s) => s.ssl), `every session of the sync uses TLS: ${JSON.stringify(sessions)}`)

    const wrong = new MongoElasticSync({ ...opts, name: unique('pgtlsbad'), postgres: { uri: pg.url, tls: { caFile: certs.otherCaFile } } })
    const err = await wrong.start().then(() => null, (e) => e)
    assert.equal(err?.code, 'ERR_POSTGRES_UNREACHABLE')
    assert.match(err.message, /TLS certificate is not trusted: it does not chain to the CA in postgres\.tls\.caFile/)
    assert.doesNotMatch(err.message, new RegExp(pg.password))
    const missing = new MongoElasticSync({ ...opts, name: unique('pgtlsmissing'), postgres: { uri: pg.url, tls: { caFile: '/nonexistent-ca.pem' } } })
    await assert.rejects(missing.start(), (e) => e.code === 'ERR_CONFIG' && /postgres\.tls\.caFile: \/nonexistent-ca\.pem is not a readable file/.test(e.message))
  })

  test('mutual TLS with postgres.tls.certFile/keyFile: every session presents the client certificate; without it, a clear error', async (t) => {
    const { certs, pg, sql, table } = await tlsPostgres(t, 'pgmtls', true)
    const tls = { caFile: certs.caFile, certFile: certs.clientCertFile, keyFile: certs.clientKeyFile }
    const opts = { ...options(unique('pgmtls'), [`public.${table}`]), postgres: { uri: pg.url, tls } }
    const sessions = await copyAndStream(t, sql, table, opts)
    assert.ok(
      sessions.length >= 2 && sessions.every((s) => s.ssl && /CN=sync-client/.test(s.client_dn)),
      `every session (SQL and replication) presents the client certificate: ${JSON.stringify(sessions)}`,
    )

    // The server refuses TLS sessions without a certificate of its CA: start() says so.
    const without = new MongoElasticSync({ ...opts, name: unique('pgmtlsnone'), postgres: { uri: pg.url, tls: { caFile: certs.caFile } } })
    const err = await without.start().then(() => null, (e) => e)
    assert.ok(err, 'a sync without the client certificate does not start')
    assert.match(err.message, /certificate/)
    assert.doesNotMatch(err.message, new RegExp(pg.password))
    const alone = { ...opts, name: unique('pgmtlsalone'), postgres: { uri: pg.url, tls: { caFile: certs.caFile, certFile: certs.clientCertFile } } }
    await assert.rejects(
      Promise.resolve().then(() => new MongoElasticSync(alone).start()),
      (e) => e.code === 'ERR_CONFIG' && /postgres\.tls: certFile and keyFile go together/.test(e.message),
    )
    const notKey = { ...opts, name: unique('pgmtlsbadkey'), postgres: { uri: pg.url, tls: { ...tls, keyFile: certs.caFile } } }
    await assert.rejects(
      Promise.resolve().then(() => new MongoElasticSync(notKey).start()),
      (e) => e.code === 'ERR_CONFIG' && /postgres\.tls\.keyFile: .*ca\.pem holds no PEM private key/.test(e.message) && !/BEGIN/.test(e.message),
    )
  })

  test('bad credentials and a missing publication fail start() with clear errors', async (t) => {
    const table = unique('plain')
    await ctx.sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
    const badUri = ctx.pg.url.replace(ctx.pg.password, 'wrong-password-123')
    const bad = new MongoElasticSync({ ...options(unique('pgbad'), [`public.${table}`]), postgres: { uri: badUri } })
    const err = await bad.start().then(() => null, (e) => e)
    assert.ok(err, 'start() rejects')
    assert.equal(err.code, 'ERR_POSTGRES_UNREACHABLE')
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
    // A load the local servers absorb (about 1,000 writes/s): unpaced, the writer made up to
    // 56,000 writes in the few seconds before the third process, whose catching up then outlasted
    // the wait.
    const writer = startWriter(table, 3)
    t.after(() => writer.stop())

    const first = runChild(t, opts)
    await waitFor('a copy batch', () => first.events.some((e) => e.type === 'batch') || first.failed(), 60000, 5)
    assert.ok(!first.failed(), JSON.stringify(first.failed()))
    first.child.kill('SIGKILL')
    await first.exited

    // The resumed copy reads current rows (the first process's exported snapshot died with
    // it) while the writer inserts without pause: it must still end (each range stops at the
    // last key present when it began; later rows come through the stream).
    const second = runChild(t, opts)
    await waitFor('streaming', () => second.events.some((e) => e.type === 'state' && e.state === 'streaming') || second.failed(), 120000, 20)
    assert.ok(!second.failed(), JSON.stringify(second.failed()))
    writer.pause = 5
    await waitFor('stream batches', () => second.events.filter((e) => e.type === 'batch' && e.phase === 'stream').length >= 3, 60000, 20)
    second.child.kill('SIGKILL')
    await second.exited

    const third = runChild(t, opts)
    await new Promise((r) => setTimeout(r, 1000))
    await writer.stop()
    const rows = await indexEqualsTable(table, 2000)
    t.diagnostic(`${writer.writes} writes during the run; ${rows.size} rows at the end`)
    third.child.kill('SIGTERM')
    await third.exited
  })

  test('the exporting session lost in the middle of a copy under writes: the copy goes on reading current rows, the index ends equal to the table', async (t) => {
    const table = unique('lostsnap')
    await ctx.sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY, v int, pad text)`)
    await ctx.sql.query(`INSERT INTO ${table} SELECT i, 0, repeat('p', 200) FROM generate_series(1, 5000) i`)
    const sync = new MongoElasticSync(options(unique('pglost'), [`public.${table}`], {
      copyRangeMinDocs: 500, copyReaders: 2, batch: { maxDocs: 50, flushIntervalMs: 50 }, retry: { initialDelayMs: 100, maxDelayMs: 500 },
    }))
    t.after(() => sync.stop().catch(() => {}))
    const copied = []
    sync.setTransform((doc, c) => {
      if (c.phase === 'copy') copied.push(doc.v)
      return doc
    })
    const events = []
    sync.onEvent((e) => events.push(e))
    const writer = startWriter(table, 3)
    t.after(() => writer.stop())
    await sync.start()
    await waitFor('a copy batch', () => events.some((e) => e.type === 'batch' && e.phase === 'copy'), 60000, 5)

    // The slot's creating session, idle while it holds the exported snapshot: the sync's only
    // wal sender until the stream starts.
    const sessions = (kind) => ctx.sql.query(
      `SELECT pid FROM pg_stat_activity WHERE application_name = 'mongo-elastic-sync' AND backend_type = $1 AND ($1 = 'walsender' OR xact_start IS NOT NULL)`, [kind])
    const [exporting, ...others] = (await sessions('walsender')).rows
    assert.ok(exporting && others.length === 0, 'one wal sender: the exporting session')
    const slot = (await ctx.sql.query(`SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE $1`, [`%${table}`])).rows
    assert.equal(slot.length, 1, 'its slot exists')
    assert.ok((await ctx.sql.query('SELECT pg_terminate_backend($1) AS ok', [exporting.pid])).rows[0].ok)
    const copiedAtKill = copied.length
    await waitFor('more copy batches after the exporting session is gone', () => copied.length >= copiedAtKill + 200 || events.find((e) => e.type === 'progress' && e.done), 60000, 20)
    assert.ok(!events.some((e) => e.type === 'state' && e.state === 'failed'), 'the sync goes on')

    // The readers still hold the imported snapshot; end their sessions too, so that the copy
    // resumes from its checkpoint without the snapshot (it cannot be imported any more).
    assert.ok(!events.some((e) => e.type === 'progress' && e.done), 'the copy still runs')
    const readers = (await sessions('client backend')).rows
    assert.ok(readers.length >= 1, 'the copy readers are in their snapshot transactions')
    for (const r of readers) await ctx.sql.query('SELECT pg_terminate_backend($1)', [r.pid])
    const copiedAtSecondKill = copied.length
    await waitFor('the copy to end', () => events.find((e) => e.type === 'progress' && e.done) || events.find((e) => e.type === 'state' && e.state === 'failed'), 120000, 50)
    assert.ok(!events.some((e) => e.type === 'state' && e.state === 'failed'), JSON.stringify(events.filter((e) => e.type === 'error' || e.type === 'state')))
    const resumed = copied.slice(copiedAtSecondKill)
    assert.ok(resumed.some((v) => v !== 0), `the resumed copy read current rows (changed after the slot's consistent point): ${resumed.length} rows copied after`)
    await writer.stop()

    const rows = await indexEqualsTable(table, 1000)
    t.diagnostic(`${writer.writes} writes; ${copied.length} rows copied, ${resumed.length} after the readers were ended; ${rows.size} rows at the end`)
    await sync.stop()
  })

  /** Waits (3 minutes at most) until the index holds exactly the table's rows and values of `v`
   * (read once, now: the writes must have stopped); fails listing the differences. */
  async function indexEqualsTable(table, everyMs) {
    const rows = new Map((await ctx.sql.query(`SELECT id, v FROM ${table}`)).rows.map((r) => [String(r.id), r.v]))
    let differences = []
    await waitFor('the index to equal the table', async () => {
      const docs = await esDocs(ctx.servers.esUrl, table)
      differences = [...rows].filter(([id, v]) => docs.get(id)?.v !== v).map(([id, v]) => `${id}: ${v} in the table, ${docs.get(id)?.v} indexed`)
      differences.push(...[...docs.keys()].filter((id) => !rows.has(id)).map((id) => `${id}: indexed, not in the table`))
      return differences.length === 0
    }, 180000, everyMs).catch((e) => assert.fail(`${e.message}; ${differences.length} differences, e.g. ${differences.slice(0, 5).join('; ')}`))
    return rows
  }

  /** Updates, inserts and deletes in a loop until stopped, `pause` ms apart (0: none). */
  function startWriter(table, pause = 0) {
    const client = new Client(ctx.pg.url)
    let running = true
    const state = { writes: 0, pause }
    const done = (async () => {
      await client.connect()
      let next = 100000
      while (running) {
        const id = 1 + Math.floor(Math.random() * 3000)
        await client.query(`UPDATE ${table} SET v = v + 1 WHERE id = $1`, [id])
        await client.query(`INSERT INTO ${table} VALUES ($1, 1, 'new')`, [next++])
        if (next % 5 === 0) await client.query(`DELETE FROM ${table} WHERE id = $1`, [id + 1])
        state.writes += 3
        if (state.pause) await new Promise((resolve) => setTimeout(resolve, state.pause))
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
