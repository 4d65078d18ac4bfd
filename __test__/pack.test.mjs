// Pack and install, as a user gets the package: `npm pack` the main package and this platform's
// binary package (scripts/pack.js, with the freshly built addon), install both tarballs into a
// new project outside the repository, then use it from there: require(), import, a TypeScript
// program against the shipped index.d.ts, the CLI's --help and --version, and a real copy and
// stream against the local servers. This is what checks `files`, `main`, `types`, `bin` and the
// binary package's name.
import test from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { once } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { setup, unique, waitFor, esDocs, withTimeout } = require('./helpers.js')
const { pack } = require('../scripts/pack.js')
const ROOT = path.join(path.dirname(new URL(import.meta.url).pathname), '..')
const PKG = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))

const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })

test('the packed package installs and works in a project of its own', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-pack-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const [main, binary] = pack(path.join(dir, 'tarballs'))

  await t.test('the main tarball holds the loader, the types, the CLI and the license, and no binary', () => {
    const files = run('tar', ['-tzf', main]).split('\n').filter(Boolean).sort()
    const wanted = ['package.json', PKG.main, PKG.types, ...Object.values(PKG.bin), 'LICENSE', 'README.md'].map((f) => path.posix.join('package', f))
    for (const f of wanted) {
      assert.ok(files.includes(f), `${f} in ${files.join(', ')}`)
    }
    assert.ok(!files.some((f) => f.endsWith('.node') || f.startsWith('package/src/') || f.startsWith('package/__test__/')), files.join(', '))
    const binaryFiles = run('tar', ['-tzf', binary]).split('\n').filter(Boolean)
    assert.ok(binaryFiles.some((f) => /^package\/mongo-elastic-sync\.[a-z0-9-]+\.node$/.test(f)), binaryFiles.join(', '))
  })

  const project = path.join(dir, 'project')
  fs.mkdirSync(project)
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'user-project', version: '1.0.0', private: true }))
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', main, binary], project)
  const installed = path.join(project, 'node_modules', ...PKG.name.split('/'))

  await t.test('require() and import load the addon from the binary package', () => {
    const cjs = spawnSync(
      process.execPath,
      ['-e', `const m = require('${PKG.name}'); console.log(typeof m.MongoElasticSync, require.resolve('${PKG.name}'))`],
      { cwd: project, encoding: 'utf8' },
    )
    assert.equal(cjs.status, 0, cjs.stderr)
    assert.equal(cjs.stdout.trim(), `function ${path.join(installed, PKG.main)}`)
    fs.writeFileSync(
      path.join(project, 'esm.mjs'),
      `import { MongoElasticSync } from '${PKG.name}'\n` +
        `try { new MongoElasticSync({ name: 'x', mongo: { uri: 'mongodb://h/?replicaSet=rs' }, collections: ['a.b'], indexTemplte: 'x' }) }\n` +
        `catch (e) { console.log(e.code, e.message) }\n`,
    )
    const esm = spawnSync(process.execPath, ['esm.mjs'], { cwd: project, encoding: 'utf8' })
    assert.equal(esm.status, 0, esm.stderr)
    assert.equal(esm.stdout.trim(), 'ERR_CONFIG indexTemplte: unknown option, did you mean `indexTemplate`?')
  })

  await t.test('a TypeScript program type-checks against the shipped index.d.ts, and a typo does not', () => {
    fs.writeFileSync(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { strict: true, noEmit: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', types: [], lib: ['ES2022'] }, files: ['usage.ts'] }),
    )
    fs.writeFileSync(
      path.join(project, 'usage.ts'),
      [
        `import { MongoElasticSync, type SyncOptions, type SyncEvent } from '${PKG.name}'`,
        `const options: SyncOptions = { name: 'n', mongo: { uri: 'mongodb://h/?replicaSet=rs' }, collections: ['a.b'], batch: { maxDocs: 10 } }`,
        `const sync = new MongoElasticSync(options)`,
        `let copied = 0`,
        `sync.onEvent((e: SyncEvent) => { if (e.type === 'progress') copied = e.copied })`,
        `// @ts-expect-error a misspelt option is a compile error too`,
        `const typo: SyncOptions = { name: 'n', mongo: { uri: 'u' }, indexTemplte: 'x' }`,
        `export { sync, typo, copied }`,
        '',
      ].join('\n'),
    )
    const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: project, encoding: 'utf8' })
    assert.equal(tsc.status, 0, `tsc:\n${tsc.stdout}${tsc.stderr}`)
  })

  const cli = path.join(project, 'node_modules', '.bin', process.platform === 'win32' ? 'mongo-elastic-sync.cmd' : 'mongo-elastic-sync')

  await t.test('the mongo-elastic-sync command answers --help and --version', () => {
    const help = spawnSync(cli, ['--help'], { cwd: project, encoding: 'utf8' })
    assert.equal(help.status, 0, help.stderr)
    assert.match(help.stdout, /^Usage: mongo-elastic-sync /)
    const version = spawnSync(cli, ['--version'], { cwd: project, encoding: 'utf8' })
    assert.equal(version.stdout.trim(), PKG.version)
  })

  await t.test('the installed command copies and streams against the local servers', async () => {
    const ctx = await setup('pack')
    t.after(() => ctx.teardown())
    const db = ctx.mongo.db(unique('packdb'))
    await db.collection('items').insertMany([{ _id: 1, v: 'copied' }, { _id: 2, v: 'copied' }])
    const index = unique('packed')
    fs.writeFileSync(path.join(project, 'sync.json'), JSON.stringify({ collections: [{ namespace: `${db.databaseName}.items`, index }] }))
    const child = spawn(cli, ['-c', 'sync.json', '--mongo', ctx.mongoUrl, '--es', ctx.esUrl, '--name', unique('pack')], { cwd: project, stdio: ['ignore', 'pipe', 'pipe'] })
    t.after(() => child.kill('SIGKILL'))
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const exited = once(child, 'exit')
    await waitFor('the installed CLI to stream', () => out.includes('state: streaming') || child.exitCode !== null, 60000)
    assert.match(out, /state: streaming/, err)
    await db.collection('items').insertOne({ _id: 3, v: 'streamed' })
    const docs = await waitFor('the streamed document in the index', async () => {
      const found = await esDocs(ctx.esUrl, index)
      return found.size === 3 && found
    })
    assert.deepEqual([...docs.entries()].sort(), [['1', { v: 'copied' }], ['2', { v: 'copied' }], ['3', { v: 'streamed' }]])
    child.kill('SIGINT')
    const [code] = await withTimeout(exited, 30000, 'the CLI did not stop on SIGINT')
    assert.equal(code, 0, err)
  })
})
