#!/usr/bin/env node
// mongo-elastic-sync daemon: runs one sync until SIGINT/SIGTERM, printing what it does.
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const { parseArgs } = require('node:util')
const { pathToFileURL } = require('node:url')

const PACKAGE = require('../package.json')

/** On a terminal, one progress bar per collection during the copy (cli-progress); elsewhere, plain lines. */
function progressBars(enabled) {
  if (!enabled) return null
  const cliProgress = require('cli-progress')
  const multibar = new cliProgress.MultiBar(
    { format: ' {bar} {percentage}% | {value}/{total} | {rate} docs/s | ETA {eta_formatted} | {namespace}', hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  )
  const bars = new Map()
  return {
    update(event) {
      let bar = bars.get(event.namespace)
      if (!bar) {
        bar = multibar.create(Math.max(event.totalEstimate, event.copied, 1), 0, { namespace: event.namespace, rate: 0 })
        bars.set(event.namespace, bar)
      }
      bar.setTotal(Math.max(event.totalEstimate, event.copied, 1))
      bar.update(event.copied, { rate: Math.round(event.rate) })
    },
    stop: () => multibar.stop(),
  }
}

const HELP = `Usage: mongo-elastic-sync [run] [--config sync.yaml | -f defs.yaml] [--mongo URI] [--es URL] [--collections db.a,db.b] [--name NAME]
       mongo-elastic-sync plan|apply -f defs.yaml [--name NAME] [--json] [--allow-destructive]
       mongo-elastic-sync apply -f defs.yaml --store URI [--expect-version N] [--allow-destructive]
       mongo-elastic-sync run --store URI --name NAME
       mongo-elastic-sync history --store URI --name NAME [--json]
       mongo-elastic-sync keygen --out FILE
       mongo-elastic-sync encrypt --public-key KEY < value

Syncs MongoDB collections into Elasticsearch: copies them, then follows their change streams.
Stops cleanly (writes what was read, saves the checkpoint) on SIGINT or SIGTERM.

  -f, --file FILE         a definition (JSON or YAML): { syncs: { NAME: options } } (see README, "Definitions
                          as code"); --name chooses the sync when it defines several
  -c, --config FILE       JSON or YAML (.yaml/.yml) file with the options of new MongoElasticSync(options)
                          (see README); "\${NAME}" in its strings is the environment variable NAME
                          ("\${NAME:-fallback}" when unset or empty, "$\${" for a literal "\${")
      --mongo URI         MongoDB URI (env MONGO_URL, or MONGO_URL_FILE: a file holding it)
      --es URL            Elasticsearch URL (env ES_URL, or ES_URL_FILE)
      --collections LIST  comma-separated db.collection list (env SYNC_COLLECTIONS)
      --name NAME         checkpoint name (env SYNC_NAME; default "mongo-elastic-sync")
      --transform FILE    a JS module (CommonJS or ESM) whose default export (or "transform" export)
                          is the transform of every document: (doc, ctx) => doc | null (see README)
      --log-format FMT    "text" (default) or "json": one JSON object per line, for log collectors
                          (engine logs too, when MONGO_ELASTIC_SYNC_LOG enables them)
      --health-file FILE  keep FILE up to date with the state, for --healthcheck (env SYNC_HEALTH_FILE)
      --healthcheck       exit 0 if the sync writing --health-file is running, else 1 (for containers)
      --http HOST:PORT    serve /healthz, /readyz, /stats, /metrics and a status page (env SYNC_HTTP)
  -q, --quiet             only state changes, leadership, dead letters and errors
  -v, --version           the version
  -h, --help              this text

Definitions: "plan -f FILE" prints what "apply -f FILE" would do for each sync of the definition
(or --name's): collections to copy, fields to map, re-copies into a new index with an alias swap
(mapping conflicts, changed field rules), removed collections. --json: the plans as JSON. Exit 3
when a plan holds destructive steps (re-copies, removals), unless --allow-destructive; "apply"
then changes nothing. Run "apply" while the sync's service is stopped.

Stored definitions: with --store URI (env SYNC_STORE): a MongoDB URI (--store-database, default
mongo_elastic_sync, --store-collection, default sync_definitions) or an Elasticsearch node
http(s)://… (--store-index, default mongo-elastic-sync-definitions), "apply" stores each sync's definition as its next
version instead of applying it (secrets must be sealed; exit 4 when another apply came first or an
instance is applying it; --expect-version N: only if the stored version is still N), "run --name"
runs a stored sync and applies its new versions live, "history --name" lists its audit history.

Secrets: "keygen --out FILE" writes a new private key to FILE (mode 0600) and prints its public key;
"encrypt --public-key KEY" seals the value read from stdin for KEY and prints "enc:age:…", usable in
any secret field (uri, url, password, apiKey, bearerToken, token). The sync opens sealed values with
the key in the privateKeyFile option, or MES_PRIVATE_KEY_FILE, or MES_PRIVATE_KEY.

Flags override the config file. Exit code: 0 after a clean stop, 1 on failure, 2 on bad usage.`

const HEALTH_EVERY_MS = 10_000
const HEALTHY = ['starting', 'standby', 'copying', 'streaming']

let logFormat = 'text'

function fail(code, message, exitCode = 1) {
  if (logFormat === 'json') {
    const line = { timestamp: new Date().toISOString(), level: 'ERROR', target: 'mongo_elastic_sync::cli', message: `${code}: ${message}`, code }
    console.error(JSON.stringify(line))
  } else {
    console.error(`mongo-elastic-sync: ${code}: ${message}`)
  }
  process.exit(exitCode)
}

const COMMANDS = ['run', 'plan', 'apply', 'keygen', 'encrypt', 'history']
/** Exit code of plan/apply when a plan holds destructive steps that were not allowed. */
const DESTRUCTIVE_EXIT = 3
/** Exit code of `apply --store` when the stored definition changed since it was read (ERR_CONFLICT). */
const CONFLICT_EXIT = 4

function parseCommandLine() {
  let parsed
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        file: { type: 'string', short: 'f' },
        out: { type: 'string', short: 'o' },
        'public-key': { type: 'string' },
        json: { type: 'boolean' },
        'allow-destructive': { type: 'boolean' },
        store: { type: 'string' },
        'store-database': { type: 'string' },
        'store-collection': { type: 'string' },
        'store-index': { type: 'string' },
        'expect-version': { type: 'string' },
        mongo: { type: 'string' },
        es: { type: 'string' },
        collections: { type: 'string' },
        name: { type: 'string' },
        transform: { type: 'string' },
        'log-format': { type: 'string' },
        'health-file': { type: 'string' },
        healthcheck: { type: 'boolean' },
        http: { type: 'string' },
        quiet: { type: 'boolean', short: 'q' },
        version: { type: 'boolean', short: 'v' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (e) {
    fail('ERR_USAGE', `${e.message}\n\n${HELP}`, 2)
  }
  const [command = 'run', ...rest] = parsed.positionals
  if (!COMMANDS.includes(command) || rest.length > 0) fail('ERR_USAGE', `unknown command "${[command, ...rest].join(' ')}" (commands: ${COMMANDS.join(', ')})\n\n${HELP}`, 2)
  return { ...parsed.values, command }
}

/** `${NAME}` (and `${NAME:-fallback}`) in every string of the config, from the environment. */
function expandEnv(value) {
  try {
    return require('..').expandEnvironment(value)
  } catch (e) {
    fail(e.code ?? 'ERR_CONFIG', e.message, 2)
  }
}

function readConfigFile(file) {
  let text
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (e) {
    fail('ERR_CONFIG', `cannot read ${file}: ${e.message}`, 2)
  }
  let options
  try {
    options = /\.ya?ml$/i.test(file) ? require('yaml').parse(text, { prettyErrors: true }) : JSON.parse(text)
  } catch (e) {
    fail('ERR_CONFIG', `${file} is not valid ${/\.ya?ml$/i.test(file) ? 'YAML' : 'JSON'}: ${e.message}`, 2)
  }
  if (!options || typeof options !== 'object' || Array.isArray(options)) fail('ERR_CONFIG', `${file}: must hold an object of options`, 2)
  return expandEnv(options)
}

/** `NAME`, or the content of the file `NAME_FILE` names (a mounted secret), trailing line break dropped. */
function envOrFile(name) {
  const file = process.env[`${name}_FILE`]
  if (file === undefined || file === '') return process.env[name]
  if (process.env[name]) fail('ERR_CONFIG', `give only one of ${name} and ${name}_FILE`, 2)
  try {
    return fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '')
  } catch (e) {
    fail('ERR_CONFIG', `${name}_FILE: cannot read ${file}: ${e.message}`, 2)
  }
}

/** The options of the sync a definition file names (`--name`, or its only one). */
function definedOptions(file, name) {
  if (!file) return null
  try {
    return require('..').definedOptions(file, name)
  } catch (e) {
    fail(e.code ?? 'ERR_CONFIG', e.message, 2)
  }
}

function loadOptions(args) {
  const env = process.env
  if (args.config && args.file) fail('ERR_USAGE', 'give only one of --config and --file', 2)
  const options = definedOptions(args.file, args.name ?? env.SYNC_NAME) ?? (args.config ? readConfigFile(args.config) : {})
  const mongo = args.mongo ?? envOrFile('MONGO_URL')
  const es = args.es ?? envOrFile('ES_URL')
  const collections = args.collections ?? env.SYNC_COLLECTIONS
  const name = args.name ?? env.SYNC_NAME
  if (mongo) options.mongo = { ...options.mongo, uri: mongo }
  if (es) options.elasticsearch = { ...options.elasticsearch, node: es }
  if (collections) options.collections = collections.split(',').map((c) => c.trim()).filter(Boolean)
  if (name) options.name = name
  const http = args.http ?? env.SYNC_HTTP
  if (http) options.http = { ...options.http, ...httpAddress(http) }
  options.name ??= 'mongo-elastic-sync'
  return options
}

async function loadTransform(file) {
  let mod
  try {
    mod = await import(pathToFileURL(path.resolve(file)).href)
  } catch (e) {
    fail('ERR_CONFIG', `--transform ${file}: cannot load it: ${e.message}`, 2)
  }
  const transform = [mod.default, mod.transform, mod.default?.transform].find((f) => typeof f === 'function')
  if (!transform) fail('ERR_CONFIG', `--transform ${file}: exports no function (export default or module.exports = (doc, ctx) => doc)`, 2)
  return transform
}

/** Exit status of `--healthcheck`: the health file is fresh and tells a running state. */
function healthcheck(file) {
  if (!file) fail('ERR_USAGE', '--healthcheck needs --health-file FILE (or SYNC_HEALTH_FILE)', 2)
  let health
  try {
    health = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (e) {
    fail('ERR_UNHEALTHY', `no health file ${file}: ${e.message}`)
  }
  const age = Date.now() - Date.parse(health.at)
  if (!(age < 3 * HEALTH_EVERY_MS)) fail('ERR_UNHEALTHY', `${file} is ${Math.round(age / 1000)} s old (state ${health.state})`)
  if (!HEALTHY.includes(health.state)) fail('ERR_UNHEALTHY', `state ${health.state}${health.error ? ` (${health.error.code})` : ''}`)
  console.log(`healthy: ${health.state}`)
  process.exit(0)
}

/** Writes the state to `file` at each change and every few seconds (atomically: write, then rename). */
function healthReporter(file) {
  if (!file) return { update() {}, stop() {} }
  let current = { state: 'starting' }
  const write = () => {
    const tmp = `${file}.${process.pid}.tmp`
    fs.writeFileSync(tmp, JSON.stringify({ ...current, at: new Date().toISOString(), pid: process.pid }))
    fs.renameSync(tmp, file)
  }
  write()
  const timer = setInterval(write, HEALTH_EVERY_MS).unref()
  return {
    update(event) {
      current = { state: event.state, ...(event.error && { error: event.error }) }
      write()
    },
    stop: () => clearInterval(timer),
  }
}

/** `--http HOST:PORT` (`[::1]:PORT` for IPv6, or a port alone): where the monitoring server listens. */
function httpAddress(text) {
  const match = /^(?:(\[[^\]]+\]|[^:]+):)?(\d{1,5})$/.exec(text)
  const port = match && Number(match[2])
  if (!match || port > 65535) fail('ERR_USAGE', `--http ${text}: expected HOST:PORT, e.g. 127.0.0.1:9810`, 2)
  return match[1] ? { host: match[1].replace(/^\[|\]$/g, ''), port } : { port }
}

function describe(event) {
  switch (event.type) {
    case 'state':
      return event.error ? `state: ${event.state} (${event.error.code}: ${event.error.message})` : `state: ${event.state}`
    case 'progress': {
      const pct = event.totalEstimate > 0 ? ` (${Math.min(100, Math.round((100 * event.copied) / event.totalEstimate))}%)` : ''
      const eta = event.done || event.etaSeconds == null ? '' : `, ETA ${Math.round(event.etaSeconds)} s`
      return `copy ${event.namespace} → ${event.index}: ${event.copied}/${event.totalEstimate}${pct}${event.done ? ' done' : ''} at ${Math.round(event.rate)} docs/s${eta}`
    }
    case 'connected':
      return `connected to ${event.distribution} ${event.version}`
    case 'batch':
      return `${event.phase} ${event.namespace} → ${event.index}: ${event.indexed} indexed, ${event.deleted} deleted, ${event.conflicts} stale, ${event.deadLetters} dead-lettered (${event.tookMs} ms)`
    case 'retry':
      return `retry #${event.attempt} in ${event.delayMs} ms: ${event.cause}`
    case 'deadLetter':
      return `dead letter ${event.namespace} _id=${event.id}: ${event.reason}`
    case 'change':
      return `${event.namespace}: ${event.operation}${event.to ? ` → ${event.to}` : ''}`
    case 'warning':
      return `warning ${event.namespace}: ${event.message}`
    case 'leadership':
      if (event.change === 'acquired') return `lease acquired (term ${event.term}): this instance syncs`
      if (event.change === 'lost') return `lease lost (term ${event.term}): another instance took over; this one stopped writing and stands by`
      return `standby: ${event.holder || 'another instance'} holds the lease (term ${event.term})`
    case 'assignment':
      return event.collections.length ? `syncing ${event.collections.join(', ')}` : 'syncing no collection'
    default:
      return JSON.stringify(event)
  }
}

/** The CLI's own lines: `say` for news, `warn` for problems; text, or JSON objects like the engine's. */
function printer(format, recordsOnStdout) {
  const out = recordsOnStdout ? process.stderr : process.stdout
  const line = (stream, level, message, event) => {
    const timestamp = new Date().toISOString()
    const text = format === 'json' ? JSON.stringify({ timestamp, level, target: 'mongo_elastic_sync::cli', message, ...(event && { event }) }) : `${timestamp} ${message}`
    stream.write(text + '\n')
  }
  return {
    say: (message, event) => line(out, 'INFO', message, event),
    warn: (message, event) => line(process.stderr, event?.error || event?.type === 'deadLetter' ? 'ERROR' : 'WARN', message, event),
  }
}

/** `keygen --out FILE`: a new private key in FILE (never overwritten; mode 0600), its public key on stdout. */
function keygen(file) {
  if (!file) fail('ERR_USAGE', 'keygen needs --out FILE: where to write the private key', 2)
  const { privateKey, publicKey } = require('..').generateKeyPair()
  try {
    fs.writeFileSync(file, `# created: ${new Date().toISOString()}\n# public key: ${publicKey}\n${privateKey}\n`, { mode: 0o600, flag: 'wx' })
  } catch (e) {
    fail('ERR_CONFIG', `--out ${file}: cannot write the key: ${e.message}`, 2)
  }
  console.log(publicKey)
}

/** `encrypt --public-key KEY`: the value on stdin (one trailing line break dropped), sealed for KEY. */
async function encrypt(publicKey) {
  if (!publicKey) fail('ERR_USAGE', 'encrypt needs --public-key KEY (age1…: keygen prints it, the sync serves it at /public_key)', 2)
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const value = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
  if (!value) fail('ERR_USAGE', 'encrypt: no value on stdin', 2)
  try {
    console.log(require('..').sealSecret(publicKey, value))
  } catch (e) {
    fail(e.code ?? 'ERR_CONFIG', e.message, 2)
  }
}

/**
 * `--store URI` (or SYNC_STORE): where definitions are stored. A MongoDB URI (with
 * `--store-database` and `--store-collection`) or an Elasticsearch node `http(s)://…` (with
 * `--store-index`); the options of the other kind are refused by the store as ERR_CONFIG.
 */
function storeOptions(args) {
  const uri = args.store ?? envOrFile('SYNC_STORE')
  if (!uri) return null
  const store = /^https?:\/\//i.test(uri) ? { elasticsearch: { node: uri } } : { uri }
  if (args['store-database']) store.database = args['store-database']
  if (args['store-collection']) store.collection = args['store-collection']
  if (args['store-index']) store.index = args['store-index']
  return store
}

/** `apply -f FILE --store URI`: each sync stored as its next version (its running instances apply it). */
async function storeDefinitions(args, store) {
  const expected = args['expect-version']
  if (expected !== undefined && !/^\d+$/.test(expected)) fail('ERR_USAGE', `--expect-version ${expected}: expected a version number`, 2)
  const options = { name: args.name, allowDestructive: Boolean(args['allow-destructive']), by: `cli@${require('node:os').hostname()}` }
  if (expected !== undefined) options.expectedVersion = Number(expected)
  let written
  try {
    written = await require('..').writeDefinition(store, args.file, options)
  } catch (e) {
    if (e.code === 'ERR_CONFIG' && e.message.startsWith('the plan holds destructive steps')) fail(e.code, `nothing stored: ${e.message}`, DESTRUCTIVE_EXIT)
    fail(e.code ?? 'ERR_INTERNAL', e.message, e.code === 'ERR_CONFLICT' ? CONFLICT_EXIT : e.code === 'ERR_CONFIG' ? 2 : 1)
  }
  if (args.json) console.log(JSON.stringify(written.map(({ plan: { text, ...plan }, ...w }) => ({ ...w, plan })), null, 2))
  else for (const w of written) process.stdout.write(`${w.plan.text}stored ${w.name} as version ${w.version}\n`)
}

/** `history --store URI --name NAME`: the stored sync's audit history, oldest first. */
async function history(args) {
  const store = storeOptions(args)
  if (!store || !args.name) fail('ERR_USAGE', 'history needs --store URI (or SYNC_STORE) and --name NAME', 2)
  let records
  try {
    records = await require('..').definitionHistory(store, args.name)
  } catch (e) {
    fail(e.code ?? 'ERR_INTERNAL', e.message, e.code === 'ERR_CONFIG' ? 2 : 1)
  }
  if (args.json) return console.log(JSON.stringify(records, null, 2))
  for (const r of records) console.log(`${r.at} v${r.version} ${r.outcome} by ${r.by}: ${r.summary.trimEnd().replace(/\n/g, '\n    ')}`)
}

/** `plan` / `apply -f FILE`: the plans, as text or JSON; exit 3 when destructive and not allowed. */
async function planOrApply(args) {
  if (!args.file) fail('ERR_USAGE', `${args.command} needs -f FILE (a definition)`, 2)
  const store = storeOptions(args)
  if (store && args.command === 'apply') return storeDefinitions(args, store)
  const api = require('..')
  const allowDestructive = Boolean(args['allow-destructive'])
  const options = { name: args.name, allowDestructive }
  const show = (plans) => {
    if (args.json) console.log(JSON.stringify({ destructive: plans.some((p) => p.destructive), plans: plans.map(({ text, ...plan }) => plan) }, null, 2))
    else process.stdout.write(plans.map((p) => p.text).join('\n'))
  }
  let plans
  try {
    plans = await api.planDefinition(args.file, options)
  } catch (e) {
    fail(e.code ?? 'ERR_INTERNAL', e.message, e.code === 'ERR_CONFIG' ? 2 : 1)
  }
  const refused = plans.some((p) => p.destructive) && !allowDestructive
  if (args.command === 'plan' || refused) {
    show(plans)
    if (refused) console.error(`mongo-elastic-sync: ${args.command === 'apply' ? 'nothing applied: ' : ''}the plan holds destructive steps (allow them with --allow-destructive)`)
    process.exit(refused ? DESTRUCTIVE_EXIT : 0)
  }
  try {
    show(await api.applyDefinition(args.file, options))
  } catch (e) {
    fail(e.code ?? 'ERR_INTERNAL', e.message)
  }
}

const formatHost = (host) => (host.includes(':') ? `[${host}]` : host)

async function main() {
  const args = parseCommandLine()
  if (args.help) {
    console.log(HELP)
    process.exit(0)
  }
  if (args.version) {
    console.log(PACKAGE.version)
    process.exit(0)
  }
  if (args.command === 'keygen') return keygen(args.out)
  if (args.command === 'encrypt') return encrypt(args['public-key'])
  if (args.command === 'plan' || args.command === 'apply') return planOrApply(args)
  if (args.command === 'history') return history(args)
  const healthFile = args['health-file'] ?? process.env.SYNC_HEALTH_FILE
  if (args.healthcheck) healthcheck(healthFile)
  const format = args['log-format'] ?? 'text'
  if (!['text', 'json'].includes(format)) fail('ERR_USAGE', `--log-format: "${format}" is not one of text, json`, 2)
  logFormat = format
  // Read by the addon when it loads: the engine's own log lines in the same format.
  process.env.MONGO_ELASTIC_SYNC_LOG_FORMAT = format
  const store = storeOptions(args)
  if (store) return runStored(args, store, format)
  const options = loadOptions(args)
  const transform = args.transform && (await loadTransform(args.transform))
  const { MongoElasticSync } = require('..')
  let sync
  try {
    sync = new MongoElasticSync(options)
    if (transform) sync.setTransform(transform)
  } catch (e) {
    fail(e.code ?? 'ERR_CONFIG', e.message, 2)
  }
  await run(sync, options, { quiet: Boolean(args.quiet), format, health: healthReporter(healthFile) })
}

/** `run --store URI --name NAME`: the stored sync, following its definition live until SIGINT/SIGTERM. */
async function runStored(args, store, format) {
  const name = args.name ?? process.env.SYNC_NAME
  if (!name) fail('ERR_USAGE', 'run --store needs --name NAME: the stored sync to run', 2)
  if (args.config || args.file || args.transform) fail('ERR_USAGE', 'run --store takes the options from the store: give no --config, --file or --transform', 2)
  const { StoredSync } = require('..')
  let sync
  try {
    sync = new StoredSync(store, name)
  } catch (e) {
    fail(e.code ?? 'ERR_CONFIG', e.message, 2)
  }
  const { say, warn } = printer(format, false)
  sync.on('event', (event) => {
    if (event.type === 'definition') {
      const line = `definition v${event.version} ${event.outcome}${event.outcome === 'rejected' ? `: ${event.summary}` : ''}`
      const shown = { ...event, error: event.error && { code: event.error.code, message: event.error.message } }
      return event.outcome === 'rejected' ? warn(line, shown) : say(line, shown)
    }
    if (args.quiet && !['state', 'deadLetter', 'leadership'].includes(event.type)) return
    if (event.type === 'deadLetter' || event.type === 'warning' || event.error) warn(describe(event), event)
    else say(describe(event), event)
  })
  const onSignal = (signal) => {
    say(`${signal}: stopping (writing what was read, saving the checkpoint)…`)
    sync.stop().then(() => process.exit(0), (e) => fail(e.code ?? 'ERR_INTERNAL', e.message))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    await sync.start()
  } catch (e) {
    fail(e.code ?? 'ERR_INTERNAL', e.message, e.code === 'ERR_CONFIG' ? 2 : 1)
  }
  say(`running stored sync ${name} (version ${sync.version}); following its definition`)
}

async function run(sync, options, { quiet, format, health }) {
  // With a stdout output, stdout carries only the records: everything the CLI says goes to stderr.
  const recordsOnStdout = (options.outputs || []).some((o) => o && o.type === 'stdout')
  const { say, warn } = printer(format, recordsOnStdout)
  const bars = progressBars(format === 'text' && process.stdout.isTTY && !quiet && !recordsOnStdout)
  sync.onEvent((event) => {
    if (event.type === 'state') health.update(event)
    if (bars && event.type === 'progress') {
      bars.update(event)
      if (!event.done) return
    }
    if (bars && event.type === 'state' && event.state !== 'copying') bars.stop()
    if (quiet && !['state', 'deadLetter', 'leadership'].includes(event.type)) return
    if (event.type === 'deadLetter' || event.type === 'warning' || event.error) warn(describe(event), event)
    else say(describe(event), event)
  })
  let stopping = false
  const onSignal = (signal) => {
    if (stopping) {
      warn(`${signal} again: exiting without waiting`)
      process.exit(1)
    }
    stopping = true
    say(`${signal}: stopping (writing what was read, saving the checkpoint)…`)
    sync.stop().catch((e) => fail(e.code, e.message))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    await sync.start()
    if (options.http && options.http.port !== 0) say(`monitoring: http://${formatHost(options.http.host ?? '127.0.0.1')}:${options.http.port ?? 9810}/`)
    await sync.wait()
  } catch (e) {
    fail(e.code ?? 'ERR_INTERNAL', e.message)
  } finally {
    health.stop()
  }
  const s = sync.stats()
  say(`stopped: ${s.copied} copied, ${s.streamed} changes streamed, ${s.indexed} indexed, ${s.deleted} deleted, ${s.deadLetters} dead letters`, { type: 'stats', ...s })
}

main()
