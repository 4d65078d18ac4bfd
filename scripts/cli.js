#!/usr/bin/env node
// mongo-elastic-sync daemon: runs one sync until SIGINT/SIGTERM, printing what it does.
'use strict'

const fs = require('node:fs')
const { parseArgs } = require('node:util')
const { MongoElasticSync } = require('..')

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

const HELP = `Usage: mongo-elastic-sync [--config sync.json] [--mongo URI] [--es URL] [--collections db.a,db.b] [--name NAME]

Syncs MongoDB collections into Elasticsearch: copies them, then follows their change streams.
Stops cleanly (writes what was read, saves the checkpoint) on SIGINT or SIGTERM.

  -c, --config FILE       JSON file with the options of new MongoElasticSync(options) (see README)
      --mongo URI         MongoDB URI (env MONGO_URL)
      --es URL            Elasticsearch URL (env ES_URL)
      --collections LIST  comma-separated db.collection list (env SYNC_COLLECTIONS)
      --name NAME         checkpoint name (env SYNC_NAME; default "mongo-elastic-sync")
      --http HOST:PORT    serve /healthz, /readyz, /stats, /metrics and a status page (env SYNC_HTTP)
  -q, --quiet             only state changes, dead letters and errors
  -h, --help              this text

Flags override the config file. Exit code: 0 after a clean stop, 1 on failure, 2 on bad usage.`

function fail(code, message, exitCode = 1) {
  console.error(`mongo-elastic-sync: ${code}: ${message}`)
  process.exit(exitCode)
}

function loadOptions() {
  let args
  try {
    args = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        mongo: { type: 'string' },
        es: { type: 'string' },
        collections: { type: 'string' },
        name: { type: 'string' },
        http: { type: 'string' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values
  } catch (e) {
    fail('ERR_USAGE', `${e.message}\n\n${HELP}`, 2)
  }
  if (args.help) {
    console.log(HELP)
    process.exit(0)
  }
  let options = {}
  if (args.config) {
    try {
      options = JSON.parse(fs.readFileSync(args.config, 'utf8'))
    } catch (e) {
      fail('ERR_CONFIG', `cannot read ${args.config}: ${e.message}`, 2)
    }
  }
  const env = process.env
  const mongo = args.mongo ?? env.MONGO_URL
  const es = args.es ?? env.ES_URL
  const collections = args.collections ?? env.SYNC_COLLECTIONS
  const name = args.name ?? env.SYNC_NAME
  if (mongo) options.mongo = { ...options.mongo, uri: mongo }
  if (es) options.elasticsearch = { ...options.elasticsearch, node: es }
  if (collections) options.collections = collections.split(',').map((c) => c.trim()).filter(Boolean)
  if (name) options.name = name
  const http = args.http ?? env.SYNC_HTTP
  if (http) options.http = { ...options.http, ...httpAddress(http) }
  options.name ??= 'mongo-elastic-sync'
  return { options, quiet: Boolean(args.quiet) }
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
    default:
      return JSON.stringify(event)
  }
}

const formatHost = (host) => (host.includes(':') ? `[${host}]` : host)

async function main() {
  const { options, quiet } = loadOptions()
  let sync
  try {
    sync = new MongoElasticSync(options)
  } catch (e) {
    fail(e.code ?? 'ERR_CONFIG', e.message, 2)
  }
  // With a stdout output, stdout carries only the records: everything the CLI says goes to stderr.
  const recordsOnStdout = (options.outputs || []).some((o) => o && o.type === 'stdout')
  const say = recordsOnStdout ? console.error : console.log
  const bars = progressBars(process.stdout.isTTY && !quiet && !recordsOnStdout)
  sync.onEvent((event) => {
    if (bars && event.type === 'progress') {
      bars.update(event)
      if (!event.done) return
    }
    if (bars && event.type === 'state' && event.state !== 'copying') bars.stop()
    if (quiet && !['state', 'deadLetter'].includes(event.type)) return
    const line = `${new Date().toISOString()} ${describe(event)}`
    if (event.type === 'deadLetter' || event.type === 'warning' || event.error) console.error(line)
    else say(line)
  })
  let stopping = false
  const onSignal = (signal) => {
    if (stopping) {
      console.error(`${signal} again: exiting without waiting`)
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
  }
  const s = sync.stats()
  say(`stopped: ${s.copied} copied, ${s.streamed} changes streamed, ${s.indexed} indexed, ${s.deleted} deleted, ${s.deadLetters} dead letters`)
}

main()
