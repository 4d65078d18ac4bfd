// Stored definitions, watched live: definitions kept in a MongoDB collection or an Elasticsearch
// index (the `configStore`),
// written with a version check (`writeDefinition`, CLI `apply --store`), and `StoredSync`, a sync
// run from the store that follows its own definition without a restart: each new version is
// checked, planned and applied (new collections copied, removed ones forgotten, changed rules
// re-copied behind the alias), recorded in the history, and a bad version is refused while the
// sync keeps running the last good one. See README, "Definitions as code".
import { EventEmitter } from 'node:events'
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import * as native from '../index.js'
import type { SyncEvent, SyncOptions as NativeSyncOptions, SyncState } from '../index.js'
import { loadDefinition, planDefinition, type Definition, type Plan } from './definition.js'
import { describe, SyncError, toSyncError } from './errors.js'
import type { Logger } from './logger.js'
import type { SyncStats } from './stats.js'
import { MongoElasticSync } from './sync.js'

/**
 * Where definitions are stored: a MongoDB collection (`uri`; with `<collection>_history` and
 * `<collection>_instances` beside it) or an Elasticsearch index (`elasticsearch`; with
 * `<index>-history` and `<index>-instances` beside it). Give one of `uri` or `elasticsearch`.
 */
export interface StoreOptions {
  /** A MongoDB store's URI (may be sealed: `enc:age:…`). */
  uri?: string
  /** A MongoDB store's database, default `mongo_elastic_sync`. */
  database?: string
  /** A MongoDB store's collection, default `sync_definitions`. */
  collection?: string
  /** An Elasticsearch store: the server, as a sync's `elasticsearch` options (secrets may be sealed). */
  elasticsearch?: native.ElasticsearchOptions
  /** An Elasticsearch store's index, default `mongo-elastic-sync-definitions`. */
  index?: string
  /** The private key opening sealed values (else `MES_PRIVATE_KEY_FILE` or `MES_PRIVATE_KEY`). */
  privateKeyFile?: string
}

/** A stored definition: one sync's options (secrets still sealed) and its version. */
export interface StoredDefinition {
  name: string
  version: number
  definition: Record<string, unknown>
  desired: 'running' | 'stopped'
  updatedAt: string
  appliedVersion: number | null
}

/** One record of a stored sync's audit history. */
export interface HistoryRecord {
  name: string
  version: number
  /** `written` (stored), `applied` or `rejected` (by an instance), `started` or `stopped` (asked). */
  outcome: 'written' | 'applied' | 'rejected' | 'started' | 'stopped'
  /** What changed (the plan's text) or why the version was refused. */
  summary: string
  /** An instance's id, `http`, or who wrote it. */
  by: string
  at: string
}

/** A running instance's registration. */
export interface Registration {
  id: string
  name: string
  host: string
  pid: number
  state: string
  version: number
  heartbeatAt: string
}

/** A stored definition as the status page lists it (no options, so no secret). */
export interface DefinitionSummary {
  name: string
  version: number
  desired: 'running' | 'stopped'
  updatedAt: string
  appliedVersion: number | null
  collections: string[]
  instances: Registration[]
}

/** What a `StoredSync` did with a version of its definition, or with a start/stop request. */
export interface DefinitionEvent {
  type: 'definition'
  outcome: 'applied' | 'rejected' | 'started' | 'stopped'
  version: number
  /** The plan carried out, or why the version was refused (never a secret). */
  summary: string
  /** For `rejected`: the error (`ERR_CONFIG` naming the field, …). */
  error?: SyncError
}

const configError = (message: string): SyncError => new SyncError(message, { code: 'ERR_CONFIG' })

async function call<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (error) {
    throw toSyncError(error)
  }
}

/** The native store of `options` (`ERR_CONFIG` naming a bad field). */
function openStore(options: StoreOptions): native.DefinitionStore {
  try {
    return new native.DefinitionStore(options)
  } catch (error) {
    throw toSyncError(error)
  }
}

export interface WriteOptions {
  /** Only this sync of the definition (default: every one). */
  name?: string
  /** The stored version this write replaces (0: none stored yet); default the version read now. `ERR_CONFLICT` when it moved on. */
  expectedVersion?: number
  /** Store versions whose plan holds destructive steps (re-copies, removals); default false: `ERR_CONFIG`, nothing stored. */
  allowDestructive?: boolean
  /** Who writes, for the history (default `api`). */
  by?: string
}

/**
 * Stores each sync of a definition (or the named one) as its next version; the instances
 * running it apply it live. Checked first (options, sealed secrets, the plan); refused with
 * `ERR_CONFLICT` when another write came first or an instance is applying the stored version.
 */
export async function writeDefinition(
  store: StoreOptions,
  pathOrObject: string | Definition,
  options: WriteOptions = {},
): Promise<Array<{ name: string; version: number; plan: Plan }>> {
  const { definition, names } = loadDefinition(pathOrObject)
  if (options.name !== undefined && !names.includes(options.name)) throw configError(`syncs.${options.name}: not defined (defined: ${names.join(', ')})`)
  const chosen = options.name === undefined ? names : [options.name]
  if (options.expectedVersion !== undefined && chosen.length !== 1) throw configError('expectedVersion: give it with one sync (name it)')
  const plans = await planDefinition(definition, { name: options.name })
  const destructive = plans.filter((p) => p.destructive)
  if (destructive.length > 0 && options.allowDestructive !== true) {
    throw configError(`the plan holds destructive steps (re-copies or removals); allow them to store it (--allow-destructive)\n${destructive.map((p) => p.text).join('')}`)
  }
  const target = openStore(store)
  const written: Array<{ name: string; version: number; plan: Plan }> = []
  for (const [i, name] of chosen.entries()) {
    const { name: _named, ...syncOptions } = definition.syncs[name]
    const version = await call(() => target.write(name, syncOptions as Record<string, unknown>, options.expectedVersion, options.by ?? 'api'))
    written.push({ name, version, plan: plans[i] })
  }
  return written
}

/** The stored definition of `name` (secrets sealed), or null. */
export function readDefinition(store: StoreOptions, name: string): Promise<StoredDefinition | null> {
  return call(() => openStore(store).read(name) as Promise<StoredDefinition | null>)
}

/** The last `limit` (default 100) records of `name`'s audit history, oldest first. */
export function definitionHistory(store: StoreOptions, name: string, limit?: number): Promise<HistoryRecord[]> {
  return call(() => openStore(store).history(name, limit) as Promise<HistoryRecord[]>)
}

/** Every stored definition with the instances running it (as the status page shows them). */
export function storedDefinitions(store: StoreOptions): Promise<DefinitionSummary[]> {
  return call(() => openStore(store).overview(ALIVE_MS) as Promise<DefinitionSummary[]>)
}

/** Asks the instances running `name` to start or stop it; resolves with the stored version. */
export function setDesired(store: StoreOptions, name: string, desired: 'running' | 'stopped'): Promise<number> {
  return call(() => openStore(store).setDesired(name, desired, 'api'))
}

/** Registrations older than this are not listed as running. */
const ALIVE_MS = 15_000

export interface StoredSyncOptions {
  /** Receives the engine's log records. */
  logger?: Logger
  /** How often the instance renews its registration and, without a change stream, looks for a new version (default 2000). */
  heartbeatMs?: number
}

/**
 * A sync run from its stored definition, following it live: new versions are applied without a
 * restart (the sync stops cleanly, the plan is carried out — collections copied, re-copied into a
 * new index behind the alias, forgotten — and it starts again from its saved positions); a version
 * that is invalid or cannot be applied is refused (a `'definition'` event with `outcome:
 * 'rejected'`, and a history record) and the sync keeps running the last good one. It registers
 * itself in the store and starts or stops as the stored `desired` says.
 */
export class StoredSync extends EventEmitter {
  readonly name: string
  /** This instance's id in the store's registrations and history. */
  readonly id = randomUUID()
  readonly #storeOptions: StoreOptions
  readonly #store: native.DefinitionStore
  readonly #logger?: Logger
  readonly #heartbeatMs: number
  /** The last good options, and the version they are. */
  #options: NativeSyncOptions | undefined
  #version = 0
  /** The last version looked at (applied or refused). */
  #seen = 0
  #desired: 'running' | 'stopped' = 'running'
  #sync: MongoElasticSync | undefined
  #last: SyncStats | null = null
  #timer: NodeJS.Timeout | undefined
  #watching: Promise<void> | undefined
  #closing = false

  constructor(store: StoreOptions, name: string, options: StoredSyncOptions = {}) {
    super()
    if (typeof name !== 'string' || name === '') throw configError('name: the stored sync to run')
    const heartbeatMs = options.heartbeatMs ?? 2000
    if (!Number.isInteger(heartbeatMs) || heartbeatMs < 100) throw configError('heartbeatMs: must be an integer of at least 100')
    this.name = name
    this.#storeOptions = store
    this.#store = openStore(store)
    this.#logger = options.logger
    this.#heartbeatMs = heartbeatMs
  }

  /** The version running (0 before the first). */
  get version(): number {
    return this.#version
  }

  /** Whether the store asks for the sync to run. */
  get desired(): 'running' | 'stopped' {
    return this.#desired
  }

  /**
   * Reads the stored definition, applies it if no instance did, registers this instance and
   * starts the sync (unless the store says stopped), then follows the store. Rejects when no
   * definition is stored or the stored one is invalid (`ERR_CONFIG` naming the field).
   */
  async start(): Promise<void> {
    if (this.#watching !== undefined) throw new SyncError('start(): already started', { code: 'ERR_STATE' })
    const stored = await call(() => this.#store.read(this.name) as Promise<StoredDefinition | null>)
    if (stored === null) throw configError(`no stored definition is named "${this.name}"`)
    const refused = await this.#reconcile(stored)
    if (refused !== undefined) throw refused
    this.#closing = false
    this.#timer = setInterval(() => void this.#heartbeat(), this.#heartbeatMs)
    await this.#heartbeat()
    this.#watching = this.#watch()
  }

  /** Stops following the store, stops the sync cleanly and removes the registration. */
  async stop(): Promise<void> {
    if (this.#watching === undefined) throw new SyncError('stop(): not started', { code: 'ERR_STATE' })
    this.#closing = true
    clearInterval(this.#timer)
    await this.#watching
    this.#watching = undefined
    await this.#stopSync()
    await call(() => this.#store.deregister(this.id)).catch((error: unknown) => this.#warn(error))
  }

  /** The running sync's stats (the last ones once it stopped), or null before it ran. */
  stats(): SyncStats | null {
    return this.#sync?.stats() ?? this.#last
  }

  /** The last `limit` records of this sync's audit history, oldest first. */
  history(limit?: number): Promise<HistoryRecord[]> {
    return call(() => this.#store.history(this.name, limit) as Promise<HistoryRecord[]>)
  }

  async #watch(): Promise<void> {
    while (!this.#closing) {
      try {
        await call(() => this.#store.waitChange(this.name, this.#heartbeatMs))
        if (this.#closing) break
        const stored = await call(() => this.#store.read(this.name) as Promise<StoredDefinition | null>)
        if (stored !== null) await this.#reconcile(stored)
      } catch (error) {
        this.#warn(error)
        await new Promise((resolve) => setTimeout(resolve, this.#heartbeatMs))
      }
    }
  }

  /** Follows `stored`: a new version applied (or refused: returned), then the desired state. */
  async #reconcile(stored: StoredDefinition): Promise<SyncError | undefined> {
    let refused: SyncError | undefined
    if (stored.version !== this.#seen) refused = await this.#reconfigure(stored)
    if (refused === undefined && this.#options !== undefined && (stored.desired !== this.#desired || this.#sync === undefined)) {
      const changed = stored.desired !== this.#desired
      this.#desired = stored.desired
      if (stored.desired === 'running') await this.#startSync()
      else await this.#stopSync()
      if (changed) this.#emitDefinition({ type: 'definition', outcome: stored.desired === 'running' ? 'started' : 'stopped', version: this.#version, summary: `${stored.desired} as the store asks` })
    }
    return refused
  }

  /** Checks and applies `stored`; the refusal when it cannot be. */
  async #reconfigure(stored: StoredDefinition): Promise<SyncError | undefined> {
    const options = { ...stored.definition, name: this.name, configStore: this.#storeOptions } as unknown as NativeSyncOptions
    try {
      new MongoElasticSync(options)
    } catch (error) {
      return this.#refuse(stored.version, error)
    }
    if (stored.appliedVersion === stored.version) return this.#switchTo(stored, options, null)
    if (!(await call(() => this.#store.beginApply(this.name, stored.version, this.id)))) return undefined // applied elsewhere or moved on: looked at again
    let plan: Plan
    const previous = this.#sync !== undefined
    try {
      plan = (await native.planSync(options)) as Plan
      await this.#stopSync()
      await native.applySync(options, true)
    } catch (error) {
      await call(() => this.#store.endApply(this.name, this.id, undefined)).catch((e: unknown) => this.#warn(e))
      if (previous && this.#desired === 'running') await this.#startSync()
      return this.#refuse(stored.version, error)
    }
    await call(() => this.#store.endApply(this.name, this.id, stored.version))
    return this.#switchTo(stored, options, plan)
  }

  async #switchTo(stored: StoredDefinition, options: NativeSyncOptions, plan: Plan | null): Promise<undefined> {
    await this.#stopSync()
    this.#options = options
    this.#version = stored.version
    this.#seen = stored.version
    if (plan !== null) {
      const record = { name: this.name, version: stored.version, outcome: 'applied', summary: plan.text, by: this.id }
      await call(() => this.#store.record(record)).catch((e: unknown) => this.#warn(e))
      this.#emitDefinition({ type: 'definition', outcome: 'applied', version: stored.version, summary: plan.text })
    }
    if (this.#desired === 'running' && stored.desired === 'running') await this.#startSync()
    return undefined
  }

  async #refuse(version: number, thrown: unknown): Promise<SyncError> {
    this.#seen = version
    const converted = toSyncError(thrown)
    const error = converted instanceof SyncError ? converted : new SyncError(describe(thrown), { code: 'ERR_INTERNAL' })
    const summary = `${error.code}: ${error.message}`
    await call(() => this.#store.record({ name: this.name, version, outcome: 'rejected', summary, by: this.id })).catch((e: unknown) => this.#warn(e))
    this.#emitDefinition({ type: 'definition', outcome: 'rejected', version, summary, error })
    return error
  }

  async #startSync(): Promise<void> {
    if (this.#sync !== undefined || this.#options === undefined) return
    const sync = new MongoElasticSync({ ...this.#options, ...(this.#logger && { logger: this.#logger }) })
    sync.on('event', (event: SyncEvent) => this.#emitEvent(event.type, event))
    sync.on('error', (error: SyncError) => this.#warn(error))
    this.#sync = sync
    await sync.start()
  }

  async #stopSync(): Promise<void> {
    const sync = this.#sync
    if (sync === undefined) return
    this.#sync = undefined
    const state: SyncState = sync.stats().state
    if (state !== 'stopped' && state !== 'failed' && state !== 'idle') await sync.stop().catch((e: unknown) => this.#warn(e))
    this.#last = sync.stats()
    sync.removeAllListeners()
  }

  async #heartbeat(): Promise<void> {
    if (this.#closing) return
    const registration = { id: this.id, name: this.name, host: hostname(), pid: process.pid, state: this.stats()?.state ?? 'stopped', version: this.#version }
    await call(() => this.#store.heartbeat(registration)).catch((error: unknown) => this.#warn(error))
  }

  #emitDefinition(event: DefinitionEvent): void {
    this.#emitEvent('definition', event)
  }

  /** Delivers an event to its type's listeners and to `'event'`'s; a listener's throw is a warning. */
  #emitEvent(type: string, event: SyncEvent | DefinitionEvent): void {
    for (const name of [type, 'event']) {
      try {
        this.emit(name, event)
      } catch (error) {
        this.#warn(error)
      }
    }
  }

  #warn(error: unknown): void {
    process.emitWarning(error instanceof Error ? error : new Error(describe(error)))
  }
}
