// The `http` option end to end: the endpoints of a real sync in each state, no secret in any
// output, the CLI's --http, and the status page in headless Chromium (copy progress, streaming
// with a changing lag, a dead letter, the failed state), with screenshots kept in
// __test__/artifacts/.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { MongoElasticSync } = require('../index.js')
const { serversFor, unique, waitFor, nextEvent, freePort } = require('./helpers.js')
const { startFaultProxy } = require('./fault-proxy.js')
const { launchBrowser, artifactPath } = require('./browser.js')

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'cli.js')
const TOKEN = 'page-token-0123456789abcdef'
const ES_PASSWORD = 'Es-Secret-Pass-42'
const MONGO_PASSWORD = 'Mongo-Secret-77'

async function get(base, route, token = TOKEN, headers = {}) {
  const res = await fetch(base + route, { headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}) } })
  const text = await res.text()
  const json = (res.headers.get('content-type') || '').startsWith('application/json') ? JSON.parse(text) : null
  return { status: res.status, text, json }
}

/** Every endpoint's body and the page as shown, for the no-secret checks. */
async function everyOutput(base, page) {
  const out = {}
  for (const route of ['/healthz', '/readyz', '/stats', '/metrics', '/', '/status.js']) out[route] = (await get(base, route)).text
  if (page) {
    out['page html'] = await page.content()
    out['page text'] = await page.locator('body').innerText()
  }
  return out
}

function assertNoSecret(outputs, secrets) {
  for (const [where, text] of Object.entries(outputs)) {
    for (const secret of secrets) assert.ok(!text.includes(secret), `${secret} appears in ${where}`)
  }
}

/** A TCP server that accepts connections and never answers (a MongoDB that hangs). */
async function blackhole(t) {
  const sockets = new Set()
  const server = net.createServer((s) => sockets.add(s))
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    for (const s of sockets) s.destroy()
    return new Promise((resolve) => server.close(resolve))
  })
  return server.address().port
}

describe('monitoring', () => {
  const ctx = serversFor('monitoring')

  test('the http option is checked like the other options', () => {
    const base = { name: 'x', mongo: { uri: 'mongodb://127.0.0.1:1/?replicaSet=rs' }, elasticsearch: { node: 'http://127.0.0.1:9' }, collections: ['a.b'] }
    const cases = [
      [{ tokne: 'x' }, /^http\.tokne: unknown option, did you mean `token`\?/],
      [{ port: 70000 }, /^http\.port: 70000 is not a port/],
      [{ token: 'short' }, /^http\.token: must be at least 16 characters/],
      [{ host: 'example.org' }, /^http\.host: "example\.org" is not an IP address/],
      [{ readyMaxLagMs: 10 }, /^http\.readyMaxLagMs: must be at least 1000/],
    ]
    for (const [http, message] of cases) {
      assert.throws(() => new MongoElasticSync({ ...base, http }), (e) => e.code === 'ERR_CONFIG' && message.test(e.message), JSON.stringify(http))
    }
  })

  test('a port already in use fails start() with ERR_CONFIG, naming the address', async (t) => {
    const taken = net.createServer()
    await new Promise((resolve) => taken.listen(0, '127.0.0.1', resolve))
    t.after(() => new Promise((resolve) => taken.close(resolve)))
    const { port } = taken.address()
    const sync = new MongoElasticSync({
      name: unique('taken'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: ctx.esUrl },
      collections: [`${unique('taken')}.c`],
      http: { port },
    })
    await assert.rejects(sync.start(), (e) => e.code === 'ERR_CONFIG' && e.message.startsWith(`http: cannot listen on 127.0.0.1:${port}: `))
    assert.equal(sync.stats().state, 'idle')
  })

  test('starting, then failing to reach MongoDB: the endpoints and the page say so, without the password', async (t) => {
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    const mongoPort = await blackhole(t)
    const sync = new MongoElasticSync({
      name: unique('starting'),
      mongo: { uri: `mongodb://app:${MONGO_PASSWORD}@127.0.0.1:${mongoPort}/?replicaSet=rs0&serverSelectionTimeoutMS=8000` },
      elasticsearch: { node: ctx.esUrl },
      collections: ['shop.orders'],
      http: { port, token: TOKEN },
    })
    const browser = await launchBrowser()
    t.after(() => browser.close())
    const started = sync.start()
    started.catch(() => {})
    const health = await waitFor('starting on /healthz', async () => {
      const h = await get(base, '/healthz')
      return h.json?.state === 'starting' && h
    })
    assert.equal(health.status, 200)
    const ready = await get(base, '/readyz')
    assert.deepEqual([ready.status, ready.json], [503, { ready: false, state: 'starting', reasons: ['the sync is starting'] }])
    assert.equal((await get(base, '/stats')).json.collections['shop.orders'].phase, 'starting')
    // The page asks for the token, then shows the state.
    const { page } = browser
    await page.goto(base + '/')
    await page.locator('#login').waitFor({ state: 'visible' })
    await page.fill('#token', TOKEN)
    await page.click('#login button')
    await page.locator('#state[data-state="starting"]').waitFor()

    await assert.rejects(started, (e) => e.code === 'ERR_MONGO_UNREACHABLE')
    const failed = await get(base, '/healthz')
    assert.equal(failed.status, 503)
    assert.equal(failed.json.error.code, 'ERR_MONGO_UNREACHABLE')
    assert.match(failed.json.error.message, /mongodb:\/\/app:\*\*\*@127\.0\.0\.1/)
    await page.locator('#state[data-state="failed"]').waitFor()
    assert.equal(await page.locator('#failure-code').innerText(), 'ERR_MONGO_UNREACHABLE')
    assertNoSecret(await everyOutput(base, page), [MONGO_PASSWORD, TOKEN])
    // stop() after a start() that failed ends nothing more (the run is over) and closes the server.
    await sync.stop()
    assert.equal(sync.stats().state, 'failed')
    await assert.rejects(fetch(base + '/healthz'))
  })

  test('the status page follows a copy, the stream with its lag, a dead letter and a failure', async (t) => {
    const proxy = await startFaultProxy(ctx.esUrl)
    t.after(() => proxy.close())
    const db = unique('mon')
    const coll = ctx.mongo.db(db).collection('orders')
    const TOTAL = 1000
    await coll.insertMany(Array.from({ length: TOTAL }, (_, i) => ({ _id: i, total: i * 2, status: 'new', note: 'n'.repeat(200) })))
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    const sync = new MongoElasticSync({
      name: unique('mon'),
      mongo: { uri: ctx.mongoUrl },
      elasticsearch: { node: proxy.url.replace('http://', `http://elastic:${ES_PASSWORD}@`) },
      collections: [`${db}.orders`],
      batch: { maxDocs: 50, flushIntervalMs: 100, concurrency: 1 },
      retry: { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 200 },
      http: { port, token: TOKEN, readyMaxLagMs: 60000 },
    })
    // The copy passes its first 300 documents (the last 50 of them no sooner than 700 ms after it
    // began, so that a progress report is made: the engine reports at most twice a second), then
    // waits until the test has seen it running.
    let releaseCopy
    const copyReleased = new Promise((resolve) => (releaseCopy = resolve))
    let copyBegan
    sync.setTransform(async (doc, c) => {
      if (c.phase !== 'copy') return doc
      copyBegan ??= Date.now()
      const id = Number(c.id)
      if (id >= 300) await copyReleased
      else if (id >= 250) await new Promise((r) => setTimeout(r, Math.max(0, copyBegan + 700 - Date.now())))
      return doc
    })
    const events = []
    sync.onEvent((e) => events.push(e))
    t.after(() => {
      releaseCopy()
      return sync.stop().catch(() => {})
    })
    const browser = await launchBrowser()
    t.after(() => browser.close())
    const { page } = browser
    await page.addInitScript((token) => sessionStorage.setItem('mongo-elastic-sync-token', token), TOKEN)

    await sync.start()
    await page.goto(base + '/')
    const ns = `${db}.orders`
    const row = page.locator(`tr[data-namespace="${ns}"]`)
    // A running copy: progress between 0 and all, with a rate and an ETA.
    await row.locator('.phase[data-phase="copying"]').waitFor({ timeout: 30000 })
    const bar = row.locator('[role=progressbar]')
    // (The rate and ETA need two progress reports; the page may show the first alone for a moment.)
    await waitFor('copy progress on the page, with a rate and an ETA', async () => {
      const [now, max] = [Number(await bar.getAttribute('aria-valuenow')), Number(await bar.getAttribute('aria-valuemax'))]
      const known = (await row.locator('.rate').innerText()) !== '–' && (await row.locator('.eta').innerText()) !== '–'
      return max === TOTAL && now > 0 && now <= 300 && known
    })
    assert.match((await row.locator('.progress').innerText()).trim(), /^\d+ \/ 1,000 \(\d+ %\)$/)
    assert.match(await row.locator('.rate').innerText(), /^[\d,]+\/s$/)
    assert.notEqual(await row.locator('.eta').innerText(), '–')
    assert.equal(await page.locator('#state').textContent(), 'copying')
    assert.equal(await page.locator('#role').textContent(), 'active')
    const copying = await get(base, '/readyz')
    assert.deepEqual([copying.status, copying.json.state], [200, 'copying'])
    await page.screenshot({ path: artifactPath('status-copying.png'), fullPage: true })

    // Streaming: changes flow, the lag shows and changes.
    const streaming = nextEvent(sync, (e) => e.type === 'state' && e.state === 'streaming', 60000)
    releaseCopy()
    await streaming
    await page.locator('#state[data-state="streaming"]').waitFor()
    await row.locator('.phase[data-phase="streaming"]').waitFor()
    let next = 10000
    let writing = true
    const writer = (async () => {
      while (writing) {
        await coll.insertOne({ _id: next++, total: 1, status: 'new' })
        await new Promise((r) => setTimeout(r, 250))
      }
    })()
    t.after(() => {
      writing = false
      return writer
    })
    const lags = new Set()
    await waitFor(
      'two different lag values on the page',
      async () => {
        const text = await row.locator('.lag').innerText()
        if (/^\d+(\.\d)? s$/.test(text)) lags.add(text)
        return lags.size >= 2
      },
      30000,
      200,
    )
    assert.match(await page.locator('#lag-now').innerText(), /^now \d+\.\d s/)
    const stats = (await get(base, '/stats')).json
    assert.equal(stats.collections[ns].phase, 'streaming')
    assert.equal(stats.collections[ns].copied, TOTAL)
    assert.ok(stats.collections[ns].streamed > 0 && stats.collections[ns].lagMs >= 0)
    assert.ok(stats.collections[ns].checkpoints > 0 && stats.collections[ns].checkpointAgeMs >= 0)
    assert.equal((await get(base, '/readyz')).status, 200)

    // A document Elasticsearch rejects: a dead letter on the page, in /stats and in the metrics.
    await coll.insertOne({ _id: 'rejected-1', total: { not: 'a number' } })
    await page.locator('#dead-letters li.dead-letter', { hasText: 'rejected-1' }).waitFor({ timeout: 30000 })
    assert.match(await page.locator('#dead-letters li.dead-letter').first().innerText(), /mapper_parsing_exception|illegal_argument/)
    assert.equal(await row.locator('.dead-letters').innerText(), '1')
    const metrics = await get(base, '/metrics')
    assert.match(metrics.text, new RegExp(`^mongo_elastic_sync_dead_letters_total\\{collection="${ns}"\\} 1$`, 'm'))
    assert.match(metrics.text, new RegExp(`^mongo_elastic_sync_documents_copied_total\\{collection="${ns}"\\} ${TOTAL}$`, 'm'))
    assert.match(metrics.text, new RegExp(`^mongo_elastic_sync_change_stream_lag_seconds\\{collection="${ns}"\\} \\d`, 'm'))
    assert.match(metrics.text, /^mongo_elastic_sync_state\{state="streaming"\} 1$/m)
    assert.match(metrics.text, /^process_resident_memory_bytes \d+$/m)
    assert.doesNotMatch(metrics.text, /rejected-1/)
    await page.waitForTimeout(1500) // let the charts draw a few more points for the picture
    await page.screenshot({ path: artifactPath('status-streaming.png'), fullPage: true })

    // Elasticsearch answers 503 from now on: retries, then the sync fails; the server stays up.
    writing = false
    await writer
    proxy.set({ kind: 'status', status: 503 })
    await coll.insertOne({ _id: 'after the outage', total: 3 })
    await assert.rejects(sync.wait(), (e) => e.code === 'ERR_ELASTICSEARCH')
    await page.locator('#state[data-state="failed"]').waitFor()
    await page.locator('#failure').waitFor({ state: 'visible' })
    assert.equal(await page.locator('#failure-code').innerText(), 'ERR_ELASTICSEARCH')
    assert.match(await page.locator('#failure-message').innerText(), /503/)
    await page.locator('#warnings li.warning', { hasText: 'retry' }).first().waitFor()
    const health = await get(base, '/healthz')
    assert.deepEqual([health.status, health.json.status, health.json.error.code], [503, 'failed', 'ERR_ELASTICSEARCH'])
    assert.equal((await get(base, '/readyz')).status, 503)
    assert.match((await get(base, '/metrics')).text, /^mongo_elastic_sync_state\{state="failed"\} 1$/m)
    await page.screenshot({ path: artifactPath('status-failed.png'), fullPage: true })
    assertNoSecret(await everyOutput(base, page), [ES_PASSWORD, TOKEN])
    assert.ok(!JSON.stringify(events).includes(ES_PASSWORD), 'no password in the events either')

    // Without the token: only the page's own files.
    assert.equal((await get(base, '/stats', null)).status, 401)
    assert.equal((await get(base, '/', null)).status, 200)
    await sync.stop()
    await assert.rejects(fetch(base + '/healthz'), 'the server closes with stop()')
  })

  test('the CLI serves --http while it runs', async (t) => {
    const db = unique('cli_http')
    await ctx.mongo.db(db).collection('c').insertOne({ _id: 1, v: 1 })
    const port = await freePort()
    const cli = spawn(
      process.execPath,
      [CLI, '--mongo', ctx.mongoUrl, '--es', ctx.esUrl, '--collections', `${db}.c`, '--name', unique('clihttp'), '--http', `127.0.0.1:${port}`, '-q'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    cli.stdout.on('data', (d) => (out += d))
    cli.stderr.on('data', (d) => (out += d))
    const exited = new Promise((resolve) => cli.on('exit', (code) => resolve(code)))
    t.after(() => cli.kill('SIGKILL'))
    const base = `http://127.0.0.1:${port}`
    await waitFor('the CLI ready, on /readyz', async () => (await get(base, '/readyz', null).catch(() => ({}))).status === 200, 60000)
    assert.match(out, new RegExp(`monitoring: http://127\\.0\\.0\\.1:${port}/`))
    // Ready is also a copy that makes progress (see Monitoring): the copy is over once streaming.
    const streaming = async () => (await get(base, '/stats', null)).json.collections[`${db}.c`]
    const collection = await waitFor('the CLI streaming, on /stats', async () => ((c) => c.phase === 'streaming' && c)(await streaming()), 60000)
    assert.equal(collection.copied, 1)
    cli.kill('SIGTERM')
    assert.equal(await exited, 0, out)

    const bad = spawn(process.execPath, [CLI, '--mongo', ctx.mongoUrl, '--http', 'localhost:'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let err = ''
    bad.stderr.on('data', (d) => (err += d))
    assert.equal(await new Promise((resolve) => bad.on('exit', resolve)), 2)
    assert.match(err, /ERR_USAGE: --http localhost:: expected HOST:PORT/)
  })
})
