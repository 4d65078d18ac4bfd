// The package's entry: the Node.js API over the generated native class (../index.js).
export { MongoElasticSync } from './sync.js'
export type { SyncOptions, StartOptions, SyncEventMap, SyncEventName, Transform } from './sync.js'
export { SyncError, isSyncError } from './errors.js'
export { StoredSync, writeDefinition, readDefinition, definitionHistory, storedDefinitions, setDesired } from './stored.js'
export type {
  StoreOptions,
  StoredDefinition,
  HistoryRecord,
  Registration,
  DefinitionSummary,
  DefinitionEvent,
  WriteOptions,
  StoredSyncOptions,
} from './stored.js'
export { loadDefinition, definedOptions, readObjectFile, expandEnvironment, planDefinition, applyDefinition } from './definition.js'
export type { Definition, DefinedSync, Plan, PlanStep, PlanOptions, ApplyOptions } from './definition.js'
export { generateKeyPair, sealSecret } from '../index.js'
export type { KeyPair } from '../index.js'
export type { SyncErrorOptions } from './errors.js'
export type { EventsOptions } from './event-queue.js'
export type { Logger } from './logger.js'
export type { SyncStats, CollectionStats } from './stats.js'
export { SearchClient } from './search.js'
export type {
  SearchRequest,
  SearchWhere,
  SearchValue,
  SearchRange,
  SearchSort,
  SearchPage,
  SearchMeta,
  SearchDocument,
  IndexSummary,
  FieldInfo,
  SearchClientOptions,
} from './search.js'
// The generated types: SyncEvent, SyncState, ErrorCode, Phase, CollectionPhase, the options…
export type * from '../index.js'
