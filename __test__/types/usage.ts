// What a TypeScript user writes against index.d.ts: it must compile, and the marked mistakes
// must not (`@ts-expect-error` fails the check when the line has no error).
import { MongoElasticSync, type SyncErrorInfo, type SyncEvent, type SyncOptions, type SyncStats } from '../../index.js'

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
}

function explain(error: SyncErrorInfo): string {
  switch (error.code) {
    case 'ERR_HISTORY_LOST':
    case 'ERR_EVENT_TOO_LARGE':
      return `re-copy needed: ${error.message}`
    case 'ERR_OUTPUT':
      return `an output failed: ${error.message}`
    default:
      return error.message
  }
}

const sync = new MongoElasticSync(options)
sync.onEvent((event: SyncEvent) => {
  switch (event.type) {
    case 'state':
      if (event.state === 'failed' && event.error) console.error(explain(event.error))
      break
    case 'connected':
      console.log(event.distribution, event.version)
      break
    case 'progress': {
      const eta: number | undefined = event.etaSeconds
      console.log(event.namespace, event.copied, event.totalEstimate, event.rate, eta, event.done)
      break
    }
    case 'batch':
      console.log(event.phase, event.indexed, event.deleted, event.conflicts, event.deadLetters, event.tookMs)
      break
    case 'retry':
      console.log(event.attempt, event.delayMs, event.cause)
      break
    case 'deadLetter':
      console.log(event.id, event.reason)
      break
    case 'change':
      if (event.operation === 'discovered' || event.operation === 'rename') console.log(event.namespace, '→', event.to)
      break
    case 'warning':
      console.warn(event.namespace, event.message)
      break
    default: {
      const unhandled: never = event
      throw new Error(`unknown event ${JSON.stringify(unhandled)}`)
    }
  }
})
sync.setTransform(async (doc, ctx) => (ctx.phase === 'copy' && ctx.namespace === 'shop.orders' ? { ...doc, copied: true } : doc.hidden ? null : doc))

async function run(): Promise<SyncStats> {
  await sync.start()
  const stats = sync.stats()
  await sync.stop()
  return stats
}
void run

// Mistakes the types catch:
// @ts-expect-error `mode` is one of three values
new MongoElasticSync({ ...options, mode: 'streamOnly' })
// @ts-expect-error outputs are of known types
new MongoElasticSync({ ...options, outputs: [{ type: 'kafka' }] })
// @ts-expect-error `namespaces.defaults` has no `namespace`: the patterns choose the collections
new MongoElasticSync({ ...options, namespaces: { include: ['a\\..*'], defaults: { namespace: 'a.b' } } })
// @ts-expect-error 'upsert' is not a change type
new MongoElasticSync({ ...options, collections: [{ namespace: 'a.b', operations: ['upsert'] }] })
// @ts-expect-error a transform returns a document, null, or a promise of one
sync.setTransform(() => 42)
