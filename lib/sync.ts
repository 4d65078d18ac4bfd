// MongoElasticSync: the native class with Node's idioms (EventEmitter, async iteration,
// AbortSignal, `await using`), and guards so that user code that throws never crashes the process.
import { EventEmitter } from 'node:events'
import * as native from '../index.js'
import type { SyncEvent, SyncOptions as NativeSyncOptions, SyncState, TransformContext } from '../index.js'
import { definedOptions, type Definition } from './definition.js'
import { abortError, describe, fromInfo, SyncError, toSyncError } from './errors.js'
import { EventQueue, type EventsOptions } from './event-queue.js'
import { forwardTo, loggerLevel, type Logger } from './logger.js'
import { syncStats, type SyncStats } from './stats.js'
import { call, type FieldInfo, type IndexSummary, type SearchDocument, type SearchPage, type SearchRequest } from './search.js'

export interface SyncOptions extends NativeSyncOptions {
  /** Receives the engine's log records (see `Logger`); stderr logging stays with `MONGO_ELASTIC_SYNC_LOG`. */
  logger?: Logger
}

export interface StartOptions {
  /** Aborting it stops the sync (cleanly: what was read is written and checkpointed). */
  signal?: AbortSignal
}

/** Every event type, with the payload its listeners get. */
export type SyncEventMap = { [T in SyncEvent['type']]: [event: Extract<SyncEvent, { type: T }>] } & {
  /** Every event. */
  event: [event: SyncEvent]
  /** The sync failed, or a listener threw (code `ERR_LISTENER`). */
  error: [error: SyncError]
}
export type SyncEventName = keyof SyncEventMap
type Listener<K extends SyncEventName> = (...args: SyncEventMap[K]) => unknown

export type Transform = (
  doc: Record<string, unknown>,
  ctx: TransformContext,
) => Record<string, unknown> | null | Promise<Record<string, unknown> | null>

/** States in which `stop()` has something to stop. */
const RUNNING: ReadonlySet<SyncState> = new Set<SyncState>(['starting', 'standby', 'copying', 'streaming', 'stopping'])

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as PromiseLike<unknown>).then === 'function'
}

/** A thrown value as an Error, so that a dead letter's reason says what was thrown. */
function asError(thrown: unknown): Error {
  return thrown instanceof Error ? thrown : new Error(`the transform threw ${describe(thrown)}`)
}

export interface MongoElasticSync {
  on<K extends SyncEventName>(event: K, listener: Listener<K>): this
  once<K extends SyncEventName>(event: K, listener: Listener<K>): this
  off<K extends SyncEventName>(event: K, listener: Listener<K>): this
  addListener<K extends SyncEventName>(event: K, listener: Listener<K>): this
  removeListener<K extends SyncEventName>(event: K, listener: Listener<K>): this
  prependListener<K extends SyncEventName>(event: K, listener: Listener<K>): this
  prependOnceListener<K extends SyncEventName>(event: K, listener: Listener<K>): this
  removeAllListeners(event?: SyncEventName): this
  listenerCount(event: SyncEventName): number
  emit<K extends SyncEventName>(event: K, ...args: SyncEventMap[K]): boolean
}

/**
 * Syncs MongoDB collections into Elasticsearch indices: copy, then change streams.
 *
 * An EventEmitter of the sync's events: `on('batch', e => …)` per type, `on('event', …)` for
 * all. Listeners are called in the order added; one that throws (or returns a rejected promise)
 * does not stop the others nor the sync: it is reported as an `'error'` (code `ERR_LISTENER`).
 * Unlike a plain EventEmitter, an `'error'` with no listener is never thrown: a listener's
 * exception then goes to `process.emitWarning`, and a failure of the sync reaches you through
 * `start()`/`wait()` and the `'state'` event. Listening does not keep the process alive.
 */
export class MongoElasticSync extends EventEmitter {
  readonly #native: native.MongoElasticSync
  readonly #queues = new Set<EventQueue>()

  /** Validates the options; throws a `SyncError` with code `ERR_CONFIG` naming the bad field. */
  constructor(options: SyncOptions) {
    super()
    // `logger` is this layer's; the addon validates the rest (and rejects keys it does not know).
    const isObject = typeof options === 'object' && options !== null
    const { logger, ...engineOptions } = isObject ? options : ({} as SyncOptions)
    const level = logger === undefined ? null : loggerLevel(logger)
    try {
      this.#native = new native.MongoElasticSync(isObject ? engineOptions : options)
    } catch (error) {
      throw toSyncError(error)
    }
    this.#native.onEvent((event) => this.#dispatch(event))
    if (logger !== undefined && level !== null) {
      this.#native.setLogger(
        forwardTo(logger, (error) => this.#warn(new SyncError(`the logger threw: ${describe(error)}`, { code: 'ERR_LISTENER', cause: error }))),
        level,
      )
    }
  }

  /**
   * A sync of a definition (a YAML or JSON file's path, or the object): the one named `name`, or
   * the only one. Every sync of the definition is checked; throws a `SyncError` with code
   * `ERR_CONFIG` naming the path of what is wrong (`syncs.orders.collections[0].index: …`).
   */
  static fromDefinition(pathOrObject: string | Definition, name?: string, options: { logger?: Logger } = {}): MongoElasticSync {
    return new MongoElasticSync({ ...definedOptions(pathOrObject, name), ...options })
  }

  /** The same as `on('event', callback)` (kept from earlier versions). */
  onEvent(callback: (event: SyncEvent) => unknown): this {
    return this.on('event', callback)
  }

  /**
   * The events from now on as an async iterator, ending after the sync's `stopped` or `failed`
   * state event (or at `break`). Events wait in a buffer bounded by `maxEvents` and `maxBytes`;
   * the sync never waits for the consumer: one that falls further behind gets the buffered
   * events and then an `ERR_EVENTS_OVERFLOW` error. An aborted `signal` ends it with an `AbortError`.
   */
  events(options: EventsOptions = {}): AsyncIterableIterator<SyncEvent> {
    const queue: EventQueue = new EventQueue(options, () => this.#queues.delete(queue))
    if (queue.open) this.#queues.add(queue)
    return queue
  }

  /**
   * Sets a transform every document goes through before it is written, in the copy and the
   * stream: return the (changed) document, or `null` to keep it out of the index (it is then
   * deleted there). A throw or rejection dead-letters the document (a `'deadLetter'` event with
   * the reason); the sync goes on. Call before `start()`.
   */
  setTransform(transform: Transform): void {
    if (typeof transform !== 'function') throw new SyncError('setTransform(): the transform must be a function', { code: 'ERR_CONFIG' })
    const guarded = (doc: Record<string, unknown>, ctx: TransformContext): ReturnType<Transform> => {
      try {
        const result = transform(doc, ctx)
        return isThenable(result) ? Promise.resolve(result).catch((thrown: unknown) => Promise.reject(asError(thrown))) : result
      } catch (thrown) {
        throw asError(thrown)
      }
    }
    try {
      this.#native.setTransform(guarded)
    } catch (error) {
      throw toSyncError(error)
    }
  }

  /**
   * Connects and starts syncing; resolves once it runs (rejects with `ERR_CONFIG`,
   * `ERR_MONGO_UNREACHABLE` (`ERR_POSTGRES_UNREACHABLE`), `ERR_ES_UNREACHABLE`, `ERR_HISTORY_LOST`, `ERR_STATE`…). While it
   * runs it keeps the process alive. Aborting `signal` stops it; if that happens before it
   * started, `start()` rejects with an `AbortError` once it is stopped again.
   */
  async start(options: StartOptions = {}): Promise<void> {
    const { signal } = options
    if (signal?.aborted) throw abortError(signal)
    let stopping: Promise<void> | undefined
    // The engine ends a start the stop was called after, even one it has not begun yet; ERR_STATE
    // here: nothing ran to stop (start() failed).
    const onAbort = (): void => {
      stopping = this.stop().catch((error: unknown) => {
        if ((toSyncError(error) as Partial<SyncError>).code !== 'ERR_STATE') this.#failed(error)
      })
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    const detach = (): void => signal?.removeEventListener('abort', onAbort)
    try {
      await this.#native.start()
    } catch (error) {
      detach()
      // Stopped by the signal while starting: the engine ends start() with ERR_STATE.
      if (stopping !== undefined && signal !== undefined) {
        await stopping
        throw abortError(signal)
      }
      throw toSyncError(error)
    }
    if (stopping !== undefined && signal !== undefined) {
      await stopping
      throw abortError(signal)
    }
    if (signal !== undefined) this.#native.wait().then(detach, detach)
  }

  /**
   * Stops reading, writes what was read, saves the checkpoint, then resolves. Also ends a
   * `start()` called before it that has not resolved yet (that start rejects with `ERR_STATE`).
   */
  async stop(): Promise<void> {
    try {
      await this.#native.stop()
    } catch (error) {
      throw toSyncError(error)
    }
  }

  /** Resolves when the sync has stopped; rejects with its `SyncError` if it failed. */
  async wait(): Promise<void> {
    try {
      await this.#native.wait()
    } catch (error) {
      throw toSyncError(error)
    }
  }

  /** Totals since creation, the current state, and per-collection figures. */
  stats(): SyncStats {
    return syncStats(this.#native.stats())
  }

  /**
   * One page of documents of an index this sync manages (or of `search.indices`), running or
   * not. Rejects with `ERR_SEARCH_INPUT` (the request is wrong; no search reached the server)
   * or `ERR_SEARCH` (the server failed). Int64 values past 2^53 come back as `bigint`.
   */
  search<T extends Record<string, unknown> = SearchDocument>(request: SearchRequest): Promise<SearchPage<T>> {
    return call(() => this.#native.search(request as Record<string, unknown>))
  }

  /** The indices this sync manages, with aliases, health and document counts. */
  indices(): Promise<IndexSummary[]> {
    return call(() => this.#native.indices())
  }

  /** The fields of `index` (one this sync manages), flattened to dotted paths, with their types. */
  fields(index: string): Promise<FieldInfo[]> {
    return call(() => this.#native.fields(index))
  }

  /** `await using sync = new MongoElasticSync(…)`: stops a running sync at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (RUNNING.has(this.#native.stats().state)) await this.stop()
  }

  #dispatch(event: SyncEvent): void {
    for (const queue of this.#queues) queue.push(event)
    this.#deliver(event.type, event)
    this.#deliver('event', event)
    if (event.type === 'state' && event.state === 'failed' && event.error !== undefined && this.listenerCount('error') > 0) {
      this.#deliver('error', fromInfo(event.error))
    }
  }

  /** Calls every listener of `name`; a throw or rejection is reported, never propagated. */
  #deliver(name: SyncEventName, arg: unknown): void {
    for (const listener of this.rawListeners(name)) {
      try {
        const result: unknown = (listener as (arg: unknown) => unknown).call(this, arg)
        if (isThenable(result)) result.then(undefined, (thrown: unknown) => this.#listenerThrew(name, thrown))
      } catch (thrown) {
        this.#listenerThrew(name, thrown)
      }
    }
  }

  #listenerThrew(name: SyncEventName, thrown: unknown): void {
    const error = new SyncError(`a '${name}' listener threw: ${describe(thrown)}`, { code: 'ERR_LISTENER', cause: thrown })
    if (name === 'error') this.#warn(error)
    else this.#failed(error)
  }

  /** An error to report: to the `'error'` listeners if there are any, else as a process warning. */
  #failed(error: unknown): void {
    const syncError = toSyncError(error)
    if (syncError instanceof SyncError && this.listenerCount('error') > 0) this.#deliver('error', syncError)
    else this.#warn(syncError)
  }

  #warn(error: unknown): void {
    process.emitWarning(error instanceof Error ? error : new Error(describe(error)))
  }
}
