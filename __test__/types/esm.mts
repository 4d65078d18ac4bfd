// The package's declarations seen from an ES module (named imports of the CommonJS build).
import { MongoElasticSync, SyncError, isSyncError, type SyncEvent } from '../../dist/index.js'

const sync = new MongoElasticSync({ name: 'esm', mongo: { uri: 'mongodb://127.0.0.1:27017/?replicaSet=rs0' }, collections: ['a.b'] })
sync.on('event', (event: SyncEvent) => console.log(event.type))
const check = (e: unknown): string | undefined => (isSyncError(e) ? e.code : e instanceof SyncError ? e.namespace : undefined)
void check
