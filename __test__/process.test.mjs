// The sync in a real child process: it keeps Node alive while running, lets it exit once stopped,
// and after SIGKILL at random moments a restart ends with Elasticsearch equal to MongoDB.
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { once } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { rng, runChild, setup, unique, waitFor, waitForMirror, withTimeout } = require('./helpers.js')
const HERE = path.dirname(new URL(import.meta.url).pathname)
const CLI = path.join(HERE, '..', 'scripts', 'cli.js')

/** Runs the CLI until it exits by itself (a one-shot copy); its exit code and output. */
async function runCliToExit(t, args, env = process.env) {
  const cli = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env })
  t.after(() => cli.kill('SIGKILL'))
  let out = ''
  let err = ''
  cli.stdout.on('data', (d) => (out += d))
  cli.stderr.on('data', (d) => (err += d))
  const [code] = await withTimeout(once(cli, 'exit'), 60000, 'the one-shot CLI copy did not exit')
  return { code, out, err }
}

const inState = (run, state) => run.events.some((e) => e.type === 'state' && e.state === state)

test('process lifecycle and crash recovery', async (t) => {
  const ctx = await setup('process')
  t.after(() => ctx.teardown())

  await t.test('a running sync keeps the process alive; a stopped one lets it exit', async () => {
    const db = ctx.mongo.db(unique('life'))
    await db.collection('c').insertMany([{ _id: 1 }, { _id: 2 }])
    const base = { name: unique('life'), mongo: { uri: ctx.mongoUrl }, elasticsearch: { node: ctx.esUrl }, collections: [`${db.databaseName}.c`] }

    const running = runChild(base)
    t.after(() => running.child.kill('SIGKILL'))
    await waitFor('child to stream', () => inState(running, 'streaming'))
    // Nothing but the sync holds this child's event loop.
    await new Promise((r) => setTimeout(r, 1500))
    assert.equal(running.child.exitCode, null, 'still running while syncing')
    running.child.kill('SIGTERM')
    const [code] = await running.exited
    assert.equal(code, 0, 'SIGTERM → stop() → clean exit')

    const stopping = runChild({ ...base, name: unique('life2') }, 'stop-when-streaming')
    t.after(() => stopping.child.kill('SIGKILL'))
    const [exitCode] = await withTimeout(stopping.exited, 30000, 'the process did not exit after stop()')
    assert.equal(exitCode, 0)
    assert.ok(stopping.events.some((e) => e.type === 'stopped-by-fixture'))
  })

  await t.test("the CLI with a stdout output keeps stdout for the records (its own lines go to stderr)", async () => {
    const db = ctx.mongo.db(unique('clistdout'))
    await db.collection('c').insertMany([{ _id: 'a', v: 1 }, { _id: 'b', v: 2 }, { _id: 'c', v: 3 }])
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-cli-'))
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
    const config = path.join(dir, 'sync.json')
    fs.writeFileSync(config, JSON.stringify({ mode: 'copy', outputs: [{ type: 'stdout' }], collections: [`${db.databaseName}.c`] }))
    const { code, out, err } = await runCliToExit(t, ['--config', config, '--mongo', ctx.mongoUrl, '--name', unique('clistdout')])
    assert.equal(code, 0, err)
    const records = out.trim().split('\n').map((line) => JSON.parse(line))
    assert.deepEqual(records.map((r) => [r.operation, r.id, r.action, r.document.v]).sort(), [['copy', 'a', 'index', 1], ['copy', 'b', 'index', 2], ['copy', 'c', 'index', 3]])
    assert.match(err, /state: stopped/, 'the CLI reports on stderr')
  })

  await t.test('the CLI: a YAML config with ${ENV} references, MONGO_URL_FILE, --transform and JSON log lines', async () => {
    const db = ctx.mongo.db(unique('cliyaml'))
    await db.collection('c').insertMany([{ _id: 'a', v: 1 }, { _id: 'b', v: 2 }])
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-cli-'))
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
    const config = path.join(dir, 'sync.yaml')
    fs.writeFileSync(
      config,
      ['# a deployment config', 'name: ${SYNC_TEST_NAME}', 'mode: copy', 'outputs:', '  - type: stdout', 'collections:', '  - namespace: ${SYNC_TEST_DB}.c', '    fields: { add: { via: "cost $${x}" } }', ''].join('\n'),
    )
    fs.writeFileSync(path.join(dir, 'mongo-url'), `${ctx.mongoUrl}\n`)
    const transform = path.join(dir, 'double.mjs')
    fs.writeFileSync(transform, 'export default (doc, ctx) => ({ ...doc, doubled: doc.v * 2, phase: ctx.phase })\n')
    const env = { ...process.env, SYNC_TEST_NAME: unique('cliyaml'), SYNC_TEST_DB: db.databaseName, MONGO_URL_FILE: path.join(dir, 'mongo-url'), MONGO_ELASTIC_SYNC_LOG: 'mongo_elastic_sync=debug' }
    delete env.MONGO_URL
    const { code, out, err } = await runCliToExit(t, ['-c', config, '--transform', transform, '--log-format', 'json'], env)
    assert.equal(code, 0, err)
    const records = out.trim().split('\n').map((line) => JSON.parse(line))
    assert.deepEqual(records.map((r) => [r.id, r.document.doubled, r.document.phase, r.document.via]).sort(), [['a', 2, 'copy', 'cost ${x}'], ['b', 4, 'copy', 'cost ${x}']])
    const logs = err.trim().split('\n').map((line) => JSON.parse(line)) // every stderr line is a JSON object
    assert.ok(logs.some((l) => l.target === 'mongo_elastic_sync::cli' && l.message === 'state: stopped' && l.event.state === 'stopped'), err)
    assert.ok(logs.some((l) => l.target.startsWith('mongo_elastic_sync::') && l.target !== 'mongo_elastic_sync::cli' && l.level === 'DEBUG'), 'engine logs in JSON too')
  })

  await t.test('the CLI refuses bad config files and arguments with exit code 2, naming what is wrong', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-cli-'))
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
    const write = (name, text) => (fs.writeFileSync(path.join(dir, name), text), path.join(dir, name))
    const cases = [
      [['-c', write('typo.yml', 'name: x\nmongo: { uri: "mongodb://h/?replicaSet=rs" }\ncollections: [a.b]\nbatch: { maxDoc: 5 }\n')], /ERR_CONFIG: batch\.maxDoc: unknown option, did you mean `maxDocs`\?/],
      [['-c', write('env.json', '{"name":"x","mongo":{"uri":"${SYNC_TEST_UNSET}"}}')], /ERR_CONFIG: mongo\.uri: environment variable SYNC_TEST_UNSET is not set/],
      [['-c', write('bad.yaml', 'name: [\n')], /ERR_CONFIG: .*bad\.yaml is not valid YAML/],
      [['--transform', write('none.js', 'module.exports = 42\n'), '--mongo', 'mongodb://h/?replicaSet=rs', '--collections', 'a.b'], /ERR_CONFIG: --transform .*none\.js: exports no function/],
      [['--log-format', 'xml'], /ERR_USAGE: --log-format: "xml" is not one of text, json/],
      [['--colections', 'a.b'], /ERR_USAGE: Unknown option '--colections'/],
    ]
    for (const [args, expected] of cases) {
      const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, MONGO_URL: '', ES_URL: '' } })
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, expected)
    }
    const version = spawnSync(process.execPath, [CLI, '--version'], { encoding: 'utf8' })
    assert.equal(version.stdout.trim(), JSON.parse(fs.readFileSync(path.join(HERE, '..', 'package.json'), 'utf8')).version)
  })

  await t.test('the CLI syncs from flags and stops cleanly on SIGINT', async () => {
    const db = ctx.mongo.db(unique('cli'))
    await db.collection('c').insertMany([{ _id: 'a', v: 1 }, { _id: 'b', v: 2 }])
    const healthFile = path.join(os.tmpdir(), `${unique('health')}.json`)
    t.after(() => fs.rmSync(healthFile, { force: true }))
    const healthcheck = () => spawnSync(process.execPath, [CLI, '--healthcheck', '--health-file', healthFile], { encoding: 'utf8' })
    assert.equal(healthcheck().status, 1, 'no health file yet: unhealthy')
    const cli = spawn(process.execPath, [CLI, '--mongo', ctx.mongoUrl, '--es', ctx.esUrl, '--collections', `${db.databaseName}.c`, '--name', unique('cli'), '--health-file', healthFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    t.after(() => cli.kill('SIGKILL'))
    let out = ''
    cli.stdout.on('data', (d) => (out += d))
    const exited = once(cli, 'exit')
    await waitFor('CLI to stream', () => out.includes('state: streaming'))
    assert.match(out, /copy .*\.c → c: 2\/2 \(100%\) done at \d+ docs\/s/)
    const healthy = healthcheck()
    assert.equal(healthy.status, 0, healthy.stderr)
    assert.match(healthy.stdout, /healthy: streaming/)
    cli.kill('SIGINT')
    const [code] = await exited
    assert.equal(code, 0)
    assert.match(out, /stopped: 2 copied/)
    const stopped = healthcheck()
    assert.equal(stopped.status, 1, 'a stopped sync is not healthy')
    assert.match(stopped.stderr, /ERR_UNHEALTHY: state stopped/)

    const bad = spawn(process.execPath, [CLI, '--mongo', 'nope', '--es', ctx.esUrl, '--collections', 'a.b'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let err = ''
    bad.stderr.on('data', (d) => (err += d))
    const [badCode] = await once(bad, 'exit')
    assert.equal(badCode, 2)
    assert.match(err, /ERR_CONFIG: mongo\.uri/)
  })

  // 4 rounds × (2 kills during the copy + 3 during the stream) = 20 seeded trials.
  for (let round = 0; round < 4; round++) {
    await t.test(`SIGKILL during copy and stream, then restart: index equals collection (round ${round + 1}/4)`, async () => {
      const random = rng(20261123 + round)
      const db = ctx.mongo.db(unique(`crash${round}`))
      const coll = db.collection('orders')
      const index = unique(`orders${round}`)
      await coll.insertMany(Array.from({ length: 6000 }, (_, i) => ({ _id: i, v: 0, s: `doc ${i}` })))
      const options = {
        name: unique(`crash${round}`),
        mongo: { uri: ctx.mongoUrl },
        elasticsearch: { node: ctx.esUrl },
        collections: [{ namespace: `${db.databaseName}.orders`, index }],
        batch: { maxDocs: 200, flushIntervalMs: 100 },
        copyRangeMinDocs: 1000, // 4 ranges: each is resumed on its own after a kill
      }
      let nextId = 10000
      let writing = true
      // A steady load of bulk changes while the sync is killed and restarted.
      const writer = (async () => {
        while (writing) {
          const ops = []
          for (let k = 0; k < 20; k++) {
            const id = Math.floor(random() * 6000)
            const r = random()
            if (r < 0.6) ops.push({ updateOne: { filter: { _id: id }, update: { $inc: { v: 1 } } } })
            else if (r < 0.75) ops.push({ deleteOne: { filter: { _id: id } } })
            else if (r < 0.9) ops.push({ insertOne: { document: { _id: nextId++, v: 0, s: 'new' } } })
            else ops.push({ replaceOne: { filter: { _id: id }, replacement: { v: -1, s: 'replaced' }, upsert: true } })
          }
          await coll.bulkWrite(ops, { ordered: false })
          await new Promise((r) => setTimeout(r, 50))
        }
      })()

      const copyBatches = (run) => run.events.filter((e) => e.type === 'batch' && e.phase === 'copy').length
      const trials = [
        { phase: 'copying', ready: (run) => copyBatches(run) >= 1 + Math.floor(random() * 6) },
        { phase: 'copying', ready: (run) => copyBatches(run) >= 1 + Math.floor(random() * 4) },
        { phase: 'streaming', ready: (run) => inState(run, 'streaming'), afterMs: random() * 1500 },
        { phase: 'streaming', ready: (run) => inState(run, 'streaming'), afterMs: random() * 1500 },
        { phase: 'streaming', ready: (run) => inState(run, 'streaming'), afterMs: random() * 300 },
      ]
      for (const trial of trials) {
        const run = runChild(options)
        t.after(() => run.child.kill('SIGKILL'))
        await waitFor(`child to reach ${trial.phase}`, () => trial.ready(run) || run.events.find((e) => e.type === 'start-failed'), 60000, 5)
        if (trial.afterMs) await new Promise((r) => setTimeout(r, trial.afterMs))
        run.child.kill('SIGKILL')
        await run.exited
        const states = run.events.filter((e) => e.type === 'state').map((e) => e.state)
        assert.equal(states.at(-1), trial.phase, `killed while ${trial.phase} (states: ${states})`)
      }
      writing = false
      await writer

      const final = runChild(options)
      t.after(() => final.child.kill('SIGKILL'))
      await waitFor('final child to stream', () => inState(final, 'streaming'), 60000)
      const diff = await waitForMirror(ctx, coll, index, (d) => d, 90000)
      assert.equal(diff.count, await coll.countDocuments())
      assert.equal(diff.stale.length, 0)
      final.child.kill('SIGTERM')
      const [code] = await final.exited
      assert.equal(code, 0)
    })
  }
})
