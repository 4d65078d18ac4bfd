// The `logger` option: the engine's log records handed to a pino/winston-style logger.
import type { LogLevel, LogRecord } from '../index.js'
import { SyncError } from './errors.js'

type LogMethod = (...args: any[]) => unknown

/**
 * Any object with level methods, such as a pino, winston or bunyan logger, or `console`. Each
 * record is passed as `logger[level](fields, message)` (pino and bunyan order), or as
 * `logger[level](message, fields)` to a winston logger (recognised by its `transports` array).
 * `fields` holds the record's structured fields plus `target` (the Rust module) and `sync`
 * (the `name` of the sync it comes from; records of no sync in particular go to every logger). A missing method falls back to a less verbose one (`trace` → `debug` →
 * `info`; `error` → `warn` → `info`).
 */
export interface Logger {
  trace?: LogMethod
  debug?: LogMethod
  info?: LogMethod
  warn?: LogMethod
  error?: LogMethod
  /**
   * The least severe level sent, read once at construction (pino's and winston's `level`):
   * `trace`/`silly`, `debug`/`verbose`, `info`/`http`, `warn`, `error`/`fatal`, or `silent`.
   * Default `info`.
   */
  level?: string
}

const LEVELS: Record<string, LogLevel | null> = {
  trace: 'trace',
  silly: 'trace',
  debug: 'debug',
  verbose: 'debug',
  http: 'info',
  info: 'info',
  warn: 'warn',
  warning: 'warn',
  error: 'error',
  fatal: 'error',
  silent: null,
}

const FALLBACKS: Record<LogLevel, readonly LogLevel[]> = {
  trace: ['trace', 'debug', 'info'],
  debug: ['debug', 'info'],
  info: ['info'],
  warn: ['warn', 'info'],
  error: ['error', 'warn', 'info'],
}

/** The level records are wanted from (`null`: none), after checking that `logger` is one. */
export function loggerLevel(logger: unknown): LogLevel | null {
  const methods = ['trace', 'debug', 'info', 'warn', 'error'] as const
  if (typeof logger !== 'object' || logger === null || !methods.some((m) => typeof (logger as Logger)[m] === 'function')) {
    throw new SyncError('logger: must be an object with level methods (info, warn, error, …), such as a pino or winston logger', { code: 'ERR_CONFIG' })
  }
  const level = (logger as Logger).level
  return typeof level === 'string' && level.toLowerCase() in LEVELS ? (LEVELS[level.toLowerCase()] as LogLevel | null) : 'info'
}

/** The function the addon calls with each record; a logger that throws is reported to `failed`. */
export function forwardTo(logger: Logger, failed: (error: unknown) => void): (record: LogRecord) => void {
  const winston = Array.isArray((logger as { transports?: unknown }).transports)
  return (record) => {
    const name = FALLBACKS[record.level].find((level) => typeof logger[level] === 'function')
    if (name === undefined) return
    const fields = { ...record.fields, target: record.target }
    try {
      if (winston) logger[name]?.(record.message, fields)
      else logger[name]?.(fields, record.message)
    } catch (error) {
      failed(error)
    }
  }
}
