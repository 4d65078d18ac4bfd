// Part `postgres` (--only postgres; not in the default run): PostgreSQL as the source, against a
// private PostgreSQL 15 (wal_level=logical) the part starts itself. Copy: the engine (mode
// 'copy') and a plain Node script with `pg` doing the same work (key-ordered pages of 1,000 rows,
// each row a document, `_bulk` of 1,000), docs/s of each and their ratio. Stream: updates at a
// steady rate timed until the index shows them (lib/latency.js) while the engine streams, and
// the same updates written by the harness to PostgreSQL and straight to `_bulk` (the floor any
// tool has), p50/p95/p99 of each.
'use strict'

const path = require('node:path')
const { measureLatency } = require('../lib/latency')
const { countDocs, deleteIndex, esRequest } = require('../lib/es')
const { log, round } = require('../lib/util')
const { ROOT } = require('../lib/options')

const PAGE = 1000

async function seedTable(sql, table, n) {
  await sql.query(`CREATE TABLE ${table} (id int PRIMARY KEY, name text, price numeric(20, 4), at timestamptz, tags text[], data jsonb, stamp bigint, pad text)`)
  await sql.query(
    `INSERT INTO ${table} SELECT i, 'name ' || i, i * 1.25, now() - i * interval '1 minute', ARRAY['t' || (i % 10), 'x'],
       jsonb_build_object('n', i, 'odd', i % 2 = 1), 0, repeat('p', 600) FROM generate_series(1, $1) i`,
    [n],
  )
  await sql.query(`ANALYZE ${table}`)
}

/** The plain script: pages in key order, one `_bulk` per page. */
async function nodeCopy(pgUrl, esUrl, table, index) {
  const { Client } = require(path.join(ROOT, 'node_modules', 'pg'))
  const client = new Client(pgUrl)
  await client.connect()
  let after = 0
  let n = 0
  for (;;) {
    const { rows } = await client.query(`SELECT * FROM ${table} WHERE id > $1 ORDER BY id LIMIT ${PAGE}`, [after])
    if (!rows.length) break
    const lines = []
    for (const r of rows) {
      const doc = { ...r, price: String(r.price), at: r.at.toISOString() }
      lines.push(JSON.stringify({ index: { _index: index, _id: String(r.id) } }), JSON.stringify(doc))
    }
    const res = await esRequest(esUrl, 'POST', '/_bulk', lines.join('\n') + '\n', { ndjson: true, timeoutMs: 120000 })
    if (res.status !== 200 || res.body.errors) throw new Error(`_bulk failed: ${res.status}`)
    n += rows.length
    after = rows[rows.length - 1].id
  }
  await client.end()
  return n
}

async function timed(fn) {
  const t = performance.now()
  const out = await fn()
  return { out, sec: (performance.now() - t) / 1000 }
}

async function postgres(run) {
  const { startPostgres } = require(path.join(ROOT, 'scripts', 'local-servers', 'postgres'))
  const { Client } = require(path.join(ROOT, 'node_modules', 'pg'))
  const { MongoElasticSync } = require(path.join(run.addonDir, 'index.js'))
  // synchronous_commit on (PostgreSQL's default; the test servers turn it off): off, a commit
  // reaches the WAL on disk, and so the wal sender, only at the WAL writer's next round (every
  // 200 ms), which added ~100 ms at p50 to the stream through replication and nothing to the baseline.
  const pg = await startPostgres({ name: 'bench', settings: { synchronous_commit: 'on' } })
  const sql = new Client(pg.url)
  await sql.connect()
  const N = run.N
  const result = { docs: N }
  try {
    const table = `bench_${run.runId}`
    await seedTable(sql, table, N)
    const common = { postgres: { uri: pg.url }, elasticsearch: { node: run.esUrl } }

    const engineIndex = `bench-${run.runId}-pg-engine`
    run.indices.add(engineIndex)
    result.copyEngine = await run.step('postgres copy: engine', async () => {
      const sync = new MongoElasticSync({ ...common, name: `bench-${run.runId}-pgcopy`, mode: 'copy', tables: [{ table: `public.${table}`, index: engineIndex }] })
      const { sec } = await timed(async () => {
        await sync.start()
        await sync.wait()
      })
      const indexed = await countDocs(run.esUrl, engineIndex)
      return { sec: round(sec, 2), indexed, docsPerSec: Math.round(indexed / sec) }
    })
    const nodeIndex = `bench-${run.runId}-pg-node`
    run.indices.add(nodeIndex)
    result.copyNode = await run.step('postgres copy: node script (pg)', async () => {
      const { out, sec } = await timed(() => nodeCopy(pg.url, run.esUrl, table, nodeIndex))
      return { sec: round(sec, 2), indexed: out, docsPerSec: Math.round(out / sec) }
    })
    if (result.copyEngine?.docsPerSec && result.copyNode?.docsPerSec) result.copyRatio = round(result.copyEngine.docsPerSec / result.copyNode.docsPerSec, 2)
    await deleteIndex(run.esUrl, nodeIndex)

    const streamDocs = Math.min(run.opts.streamDocs, N)
    const ids = Array.from({ length: streamDocs }, (_, i) => String(i + 1))
    const updates = run.opts.updates
    const writeToPg = (batch) => sql.query(`UPDATE ${table} SET stamp = v.s FROM (SELECT unnest($1::int[]) AS id, unnest($2::bigint[]) AS s) v WHERE ${table}.id = v.id`, [batch.map((u) => Number(u.id)), batch.map((u) => u.stamp)])
    result.streamEngine = await run.step('postgres stream: engine', async () => {
      // mode 'stream': the index already holds the copy; a copy first (the default mode) would
      // hold back the updates made while it runs, timing the copy, not the stream.
      const sync = new MongoElasticSync({
        ...common,
        name: `bench-${run.runId}-pgstream`,
        mode: 'stream',
        tables: [{ table: `public.${table}`, index: engineIndex }],
        batch: { flushIntervalMs: 50 },
      })
      await sync.start()
      try {
        return await measureLatency({ esUrl: run.esUrl, index: engineIndex, ids, updates, perBatch: 2, everyMs: 20, stampBase: 1e9, write: writeToPg, log })
      } finally {
        await sync.stop()
      }
    })
    result.streamBaseline = await run.step('postgres stream: harness writes PostgreSQL then _bulk', async () =>
      measureLatency({
        esUrl: run.esUrl,
        index: engineIndex,
        ids,
        updates,
        perBatch: 2,
        everyMs: 20,
        stampBase: 2e9,
        log,
        write: async (batch) => {
          await writeToPg(batch)
          const lines = batch.flatMap((u) => [JSON.stringify({ update: { _index: engineIndex, _id: u.id } }), JSON.stringify({ doc: { stamp: u.stamp } })])
          await esRequest(run.esUrl, 'POST', '/_bulk', lines.join('\n') + '\n', { ndjson: true })
        },
      }),
    )
    await sql.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active`)
  } finally {
    await sql.end().catch(() => {})
    await pg.stop()
  }
  log(`postgres: copy engine ${result.copyEngine?.docsPerSec} docs/s, node ${result.copyNode?.docsPerSec} docs/s; stream p50 engine ${result.streamEngine?.p50Ms} ms, baseline ${result.streamBaseline?.p50Ms} ms`)
  return result
}

module.exports = { postgres }
