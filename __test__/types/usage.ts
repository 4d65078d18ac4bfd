// What a TypeScript user writes against the package's declarations (the built entry, dist/,
// over the generated index.d.ts): it must compile, and the marked mistakes must not
// (`@ts-expect-error` fails the check when the line has no error).
import {
  MongoElasticSync,
  SyncError,
  applyDefinition,
  generateKeyPair,
  isSyncError,
  planDefinition,
  sealSecret,
  type Definition,
  type Plan,
  type CollectionPhase,
  type CollectionStats,
  type ErrorCode,
  type Logger,
  type Phase,
  type SyncErrorInfo,
  type SyncEvent,
  type SyncOptions,
  type SyncState,
  type SyncStats,
} from '../../dist/index.js'

const options: SyncOptions = {
  name: 'typed',
  mongo: { uri: 'mongodb://127.0.0.1:27017/?replicaSet=rs0', tls: { caFile: '/etc/ca.pem' } },
  elasticsearch: { node: 'http://127.0.0.1:9200', apiKey: 'a2V5' },
  collections: [
    'shop.orders',
    {
      namespace: 'shop.users',
      index: 'people',
      fields: { exclude: ['password'], rename: { fullName: 'name' }, add: { source: '$namespace' }, flatten: '_' },
      operations: ['insert', 'update', 'replace'],
      filter: { active: true },
    },
  ],
  namespaces: { include: ['logs\\..*'], exclude: ['.*\\.tmp_.*'], defaults: { index: 'logs-{db}-{coll}', pipeline: 'enrich' } },
  outputs: [
    { type: 'elasticsearch' },
    { type: 'file', path: '/var/lib/sync/changes.ndjson', fsync: 'never', keepFiles: 3 },
    { type: 'tcp', host: 'logstash', port: 5044, tls: { rejectUnauthorized: true } },
    { type: 'nats', url: 'nats://127.0.0.1:4222', subject: 'mongo.{db}.{coll}' },
  ],
  batch: { maxDocs: 500, flushIntervalMs: 200 },
  mode: 'copyAndStream',
  onHistoryLost: 'resync',
  onDrop: 'deleteIndex',
  // Any object with level methods: pino, winston, bunyan, console.
  logger: console,
}

function explain(error: SyncErrorInfo | SyncError): string {
  switch (error.code) {
    case 'ERR_HISTORY_LOST':
    case 'ERR_EVENT_TOO_LARGE':
      return `re-copy ${error.namespace ?? 'the collection'}: ${error.message}`
    case 'ERR_OUTPUT':
      return `an output failed: ${error.message}`
    case 'ERR_LISTENER':
      return `a listener threw: ${error.message}`
    default:
      return error.message
  }
}

const sync = new MongoElasticSync(options)

// One listener per event type, typed by the type…
sync.on('deadLetter', (e) => console.error(e.namespace, e.id, e.reason))
sync.once('state', (e) => {
  const state: SyncState = e.state
  if (state === 'failed' && e.error) console.error(explain(e.error))
})
const onProgress = (e: Extract<SyncEvent, { type: 'progress' }>): void => console.log(e.copied, e.totalEstimate, e.etaSeconds)
sync.on('progress', onProgress).off('progress', onProgress)
sync.prependListener('batch', (e) => {
  const phase: Phase = e.phase
  console.log(phase, e.indexed, e.deleted, e.conflicts, e.deadLetters, e.tookMs)
})
sync.on('retry', async (e) => console.log(e.attempt, e.delayMs, e.cause)) // async listeners too
sync.on('change', (e) => (e.operation === 'discovered' || e.operation === 'rename' ? console.log(e.namespace, '→', e.to) : undefined))
sync.on('warning', (e) => console.warn(e.namespace, e.message))
sync.on('connected', (e) => console.log(e.distribution, e.version))
sync.on('leadership', (e) => console.log(e.change === 'acquired' ? 'leader' : e.change, e.term, e.holder))
sync.on('assignment', (e) => console.log(e.collections.join(', ')))
// …'error' for failures and listeners that threw…
sync.on('error', (err) => {
  const code: ErrorCode = err.code
  console.error(code, explain(err), err.cause)
})
// …and every event, as a discriminated union.
sync.on('event', (event) => {
  switch (event.type) {
    case 'state':
    case 'connected':
    case 'progress':
    case 'batch':
    case 'retry':
    case 'deadLetter':
    case 'change':
    case 'warning':
    case 'leadership':
    case 'assignment':
    case 'batchSize':
      break
    default: {
      const unhandled: never = event
      throw new Error(`unknown event ${JSON.stringify(unhandled)}`)
    }
  }
})
sync.onEvent((event: SyncEvent) => console.log(event.type))
sync.setTransform(async (doc, ctx) => (ctx.phase === 'copy' && ctx.namespace === 'shop.orders' ? { ...doc, copied: true } : doc.hidden ? null : doc))

function perCollection(stats: SyncStats): string[] {
  return Object.entries(stats.collections).map(([namespace, c]: [string, CollectionStats]) => {
    const phase: CollectionPhase = c.phase
    const lag = c.lagMs === undefined ? 'no change yet' : `${c.lagMs} ms behind`
    const checkpoint = c.lastCheckpointAt?.toISOString() ?? 'never'
    return `${namespace} ${phase} ${c.copied}/${c.totalEstimate} streamed ${c.streamed} ${lag}, checkpoint ${checkpoint} (${c.checkpointAgeMs} ms), ${c.inFlightBytes} B in flight, ${c.retries} retries, ${c.deadLetters} dead letters, changed ${c.lastChangeAt?.getTime()}`
  })
}

async function run(signal: AbortSignal): Promise<SyncStats> {
  try {
    await sync.start({ signal })
  } catch (e) {
    if (isSyncError(e)) console.error(e.code, e.namespace, e.message)
    else if (e instanceof Error && e.name === 'AbortError') return sync.stats()
    throw e
  }
  for await (const event of sync.events({ signal, maxEvents: 1000, maxBytes: 1 << 20 })) {
    if (event.type === 'progress' && event.done) break
  }
  const stats = sync.stats()
  console.log(stats.state, stats.copied, stats.streamed, stats.valuesAltered, perCollection(stats))
  const role: 'leader' | 'standby' | 'member' | undefined = stats.role
  console.log(role, stats.term, stats.ownedCollections.join(', '), stats.state === 'standby')
  await sync.stop()
  await sync.wait()
  return stats
}
void run

async function scoped(): Promise<void> {
  // Stopped at the end of the scope, however it is left.
  await using scopedSync = new MongoElasticSync({ ...options, logger: undefined })
  await scopedSync.start()
}
void scoped

const pinoLike: Logger = { level: 'debug', info: (fields: object, msg: string) => console.log(fields, msg), error: () => {} }
new MongoElasticSync({ ...options, logger: pinoLike })
new MongoElasticSync({ ...options, instances: { group: 'workers', maxCollectionsPerInstance: 4 } })
new SyncError('custom', { code: 'ERR_STATE', namespace: 'a.b', cause: new Error('why') })

// Mistakes the types catch:
// @ts-expect-error `mode` is one of three values
new MongoElasticSync({ ...options, mode: 'streamOnly' })
// @ts-expect-error a partitioned group needs its `group`
new MongoElasticSync({ ...options, instances: { maxCollectionsPerInstance: 4 } })
// @ts-expect-error outputs are of known types
new MongoElasticSync({ ...options, outputs: [{ type: 'kafka' }] })
// @ts-expect-error `namespaces.defaults` has no `namespace`: the patterns choose the collections
new MongoElasticSync({ ...options, namespaces: { include: ['a\\..*'], defaults: { namespace: 'a.b' } } })
// @ts-expect-error 'upsert' is not a change type
new MongoElasticSync({ ...options, collections: [{ namespace: 'a.b', operations: ['upsert'] }] })
// @ts-expect-error a transform returns a document, null, or a promise of one
sync.setTransform(() => 42)
// @ts-expect-error no such event
sync.on('deadletter', () => {})
// @ts-expect-error a dead letter has no `copied`
sync.on('deadLetter', (e) => e.copied)
// @ts-expect-error 'error' listeners get a SyncError, not an event
sync.on('error', (e: SyncEvent) => e.type)
// @ts-expect-error states are a closed set
const running: SyncState = 'running'
void running
// @ts-expect-error error codes are a closed set
new SyncError('x', { code: 'ERR_NOPE' })
// @ts-expect-error `lastChangeAt` is unknown before the first change
perCollection(sync.stats()).concat(sync.stats().collections['a.b']!.lastChangeAt.toISOString())
// @ts-expect-error `maxEvents` is a number
sync.events({ maxEvents: '100' })
// @ts-expect-error `start` takes an AbortSignal, not a timeout
void sync.start({ signal: 5000 })
// @ts-expect-error a logger is an object with level methods
new MongoElasticSync({ ...options, logger: 'debug' })

// Definitions as code: a definition object (or a file's path), its plans, sealed secrets.
const { publicKey } = generateKeyPair()
const definition: Definition = {
  version: 1,
  syncs: { orders: { mongo: { uri: sealSecret(publicKey, 'mongodb://h/?replicaSet=rs') }, collections: ['shop.orders'], privateKeyFile: '/run/secrets/mes.key' } },
}
const defined: MongoElasticSync = MongoElasticSync.fromDefinition(definition, 'orders', { logger: console })
void defined
void planDefinition('syncs.yaml').then((plans: Plan[]) =>
  plans.flatMap((p) => p.steps.map((s) => (s.kind === 'recopy' ? `${s.namespace}: ${s.reason}` : s.kind === 'remove' ? s.namespace : s.index))),
)
void applyDefinition(definition, { name: 'orders', allowDestructive: true })
// @ts-expect-error a definition's syncs are named: the options go under `syncs`
MongoElasticSync.fromDefinition({ mongo: { uri: 'mongodb://h' }, collections: ['a.b'] })
// @ts-expect-error a `remove` step has no index
void planDefinition(definition).then((plans) => plans[0]!.steps.map((s) => s.kind === 'remove' && s.index))
