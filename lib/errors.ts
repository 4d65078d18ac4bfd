// SyncError: what the package throws, rejects with and emits as 'error'.
import type { ErrorCode, SyncErrorInfo } from '../index.js'

/** Marks SyncErrors across copies of the package (where `instanceof` cannot tell). */
const BRAND = Symbol.for('mongo-elastic-sync.SyncError')

export interface SyncErrorOptions {
  code: ErrorCode
  /** The collection (`"db.collection"`) the error is about, when it is one collection's. */
  namespace?: string
  /** What caused it, when it comes from JavaScript (a listener's exception, an abort reason). */
  cause?: unknown
}

/**
 * An error of the sync, with a stable `code`. Errors of the engine carry their cause chain in
 * `message` (`context: cause: deeper cause`); errors caused by JavaScript code (a listener that
 * threw) carry it as `cause` too.
 */
export class SyncError extends Error {
  override readonly name = 'SyncError'
  /** Stable code such as `ERR_HISTORY_LOST`: switch on this, not on `message`. */
  readonly code: ErrorCode
  /** The failing collection (`"db.collection"`), when the error is one collection's. */
  readonly namespace?: string

  constructor(message: string, options: SyncErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = options.code
    if (options.namespace !== undefined) this.namespace = options.namespace
    Object.defineProperty(this, BRAND, { value: true })
  }
}

/** Whether `value` is a SyncError (also one from another copy of this package). */
export function isSyncError(value: unknown): value is SyncError {
  return value instanceof SyncError || (typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true)
}

/** An error from the addon (an `Error` with an `ERR_…` code) as a SyncError; others as they are. */
export function toSyncError(error: unknown): unknown {
  if (isSyncError(error) || !(error instanceof Error)) return error
  const { code, namespace } = error as Error & { code?: unknown; namespace?: unknown }
  if (typeof code !== 'string' || !/^ERR_[A-Z_]+$/.test(code)) return error
  return new SyncError(error.message, { code: code as ErrorCode, namespace: typeof namespace === 'string' ? namespace : undefined })
}

/** The error of a `failed` state event. */
export function fromInfo(info: SyncErrorInfo): SyncError {
  return new SyncError(info.message, { code: info.code, namespace: info.namespace })
}

/** What Node's APIs reject with when their `signal` aborts: an `AbortError` whose cause is the reason. */
export function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('The operation was aborted', { cause: signal.reason }), { name: 'AbortError', code: 'ABORT_ERR' })
}

/** A thrown value as text, whatever it is. */
export function describe(thrown: unknown): string {
  if (thrown instanceof Error) return thrown.message
  try {
    return typeof thrown === 'string' ? thrown : String(thrown)
  } catch {
    return Object.prototype.toString.call(thrown)
  }
}
