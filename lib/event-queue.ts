// The buffer behind `sync.events()`: an async iterator over the sync's events, bounded in
// count and bytes. Events are never held back from the engine for it (no backpressure): a
// consumer that falls further behind than the bounds gets an ERR_EVENTS_OVERFLOW error instead.
import type { SyncEvent } from '../index.js'
import { abortError, SyncError } from './errors.js'

export interface EventsOptions {
  /** Stops the iteration: the pending (or next) `next()` rejects with an `AbortError`. */
  signal?: AbortSignal
  /** Most events buffered while the consumer is busy (default 10,000). */
  maxEvents?: number
  /** Most bytes buffered (estimated as JS memory: strings at 2 bytes a character plus 64 per event; default 16 MiB). */
  maxBytes?: number
}

export const DEFAULT_MAX_EVENTS = 10_000
export const DEFAULT_MAX_BYTES = 16 * 1024 * 1024

/** An estimate of the memory an event holds. */
export function eventBytes(value: object): number {
  let bytes = 64
  for (const field of Object.values(value)) {
    if (typeof field === 'string') bytes += 2 * field.length
    else if (typeof field === 'object' && field !== null) bytes += eventBytes(field)
    else bytes += 8
  }
  return bytes
}

function limit(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < 1) throw new SyncError(`events(): ${name} must be a positive integer, got ${String(value)}`, { code: 'ERR_CONFIG' })
  return value
}

type Waiter = { resolve: (result: IteratorResult<SyncEvent>) => void; reject: (error: unknown) => void }

export class EventQueue implements AsyncIterableIterator<SyncEvent> {
  readonly #maxEvents: number
  readonly #maxBytes: number
  readonly #detach: () => void
  readonly #signal?: AbortSignal
  readonly #onAbort = (): void => this.#fail(abortError(this.#signal as AbortSignal), true)
  #buffer: { event: SyncEvent; bytes: number }[] = []
  #bytes = 0
  #waiter?: Waiter
  /** No more events come in: the sync ended, the consumer returned, or the buffer overflowed. */
  #closed = false
  /** Thrown by `next()` once the buffer is drained (overflow) or at once (abort). */
  #failure?: unknown

  constructor(options: EventsOptions, detach: () => void) {
    this.#maxEvents = limit(options.maxEvents, DEFAULT_MAX_EVENTS, 'maxEvents')
    this.#maxBytes = limit(options.maxBytes, DEFAULT_MAX_BYTES, 'maxBytes')
    this.#detach = detach
    this.#signal = options.signal
    if (this.#signal?.aborted) {
      this.#failure = abortError(this.#signal)
      this.#closed = true
    } else {
      this.#signal?.addEventListener('abort', this.#onAbort, { once: true })
    }
  }

  /** Whether events are still taken in (else the sync need not keep it). */
  get open(): boolean {
    return !this.#closed
  }

  /** Called by the sync for every event. */
  push(event: SyncEvent): void {
    if (this.#closed) return
    const ends = event.type === 'state' && (event.state === 'stopped' || event.state === 'failed')
    if (this.#waiter) {
      this.#take().resolve({ value: event, done: false })
    } else {
      const bytes = eventBytes(event)
      if (this.#buffer.length + 1 > this.#maxEvents || this.#bytes + bytes > this.#maxBytes) {
        const message = `events(): the consumer fell behind by more than ${this.#maxEvents} events or ${this.#maxBytes} bytes (${this.#buffer.length} events, ${this.#bytes} bytes buffered); later events were not kept`
        this.#fail(new SyncError(message, { code: 'ERR_EVENTS_OVERFLOW' }), false)
        return
      }
      this.#buffer.push({ event, bytes })
      this.#bytes += bytes
    }
    if (ends) this.#close()
  }

  next(): Promise<IteratorResult<SyncEvent>> {
    const first = this.#buffer.shift()
    if (first) {
      this.#bytes -= first.bytes
      return Promise.resolve({ value: first.event, done: false })
    }
    if (this.#failure !== undefined) {
      const failure = this.#failure
      this.#failure = undefined
      return Promise.reject(failure)
    }
    if (this.#closed) return Promise.resolve({ value: undefined, done: true })
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject }
    })
  }

  /** `break` out of `for await`: stops listening and drops what is buffered. */
  return(): Promise<IteratorResult<SyncEvent>> {
    this.#buffer = []
    this.#bytes = 0
    this.#failure = undefined
    this.#close()
    return Promise.resolve({ value: undefined, done: true })
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  #take(): Waiter {
    const waiter = this.#waiter as Waiter
    this.#waiter = undefined
    return waiter
  }

  /** Ends the iteration with `error`: at once (`now`, dropping the buffer) or after the buffer. */
  #fail(error: unknown, now: boolean): void {
    if (now) {
      this.#buffer = []
      this.#bytes = 0
    }
    if (this.#waiter) this.#take().reject(error)
    else this.#failure = error
    this.#close()
  }

  #close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#signal?.removeEventListener('abort', this.#onAbort)
    this.#detach()
    if (this.#waiter && this.#buffer.length === 0) this.#take().resolve({ value: undefined, done: true })
  }
}
