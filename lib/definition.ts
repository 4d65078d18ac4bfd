// Definitions as code: a YAML or JSON file (or object) naming one or more syncs,
// `{ version?: 1, syncs: { <name>: <options> } }`, each with the options of `new MongoElasticSync()`
// (checked by the same strict parser; errors name the path from the file's root).
import { readFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import * as native from '../index.js'
import type { SyncOptions as NativeSyncOptions } from '../index.js'
import { SyncError, toSyncError } from './errors.js'

/** A sync of a definition: its options, the name being the key it is defined under. */
export type DefinedSync = Omit<NativeSyncOptions, 'name'> & { name?: string }

export interface Definition {
  /** The schema's version (1). */
  version?: 1
  /** The syncs, by name (the name is also the checkpoint's). */
  syncs: Record<string, DefinedSync>
}

const configError = (message: string): SyncError => new SyncError(message, { code: 'ERR_CONFIG' })

/**
 * `${NAME}` (and `${NAME:-fallback}`) in every string of `value`, from the environment; `$${`
 * stands for a literal `${`. An unset variable without fallback is `ERR_CONFIG` naming the path.
 */
export function expandEnvironment(value: unknown, at = ''): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (match: string, name?: string, fallback?: string) => {
      if (match === '$${') return '${'
      const found = process.env[name as string]
      if (found !== undefined && (found !== '' || fallback === undefined)) return found
      if (fallback !== undefined) return fallback
      throw configError(`${at || 'config'}: environment variable ${name} is not set`)
    })
  }
  if (Array.isArray(value)) return value.map((v: unknown, i) => expandEnvironment(v, `${at}[${i}]`))
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandEnvironment(v, at ? `${at}.${k}` : k)]))
  }
  return value
}

/** A YAML (`.yaml`/`.yml`) or JSON file holding an object, with `${NAME}` expanded from the environment. */
export function readObjectFile(file: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    throw configError(`cannot read ${file}: ${(error as Error).message}`)
  }
  const yaml = /\.ya?ml$/i.test(file)
  let value: unknown
  try {
    value = yaml ? parseYaml(text, { prettyErrors: true }) : JSON.parse(text)
  } catch (error) {
    throw configError(`${file} is not valid ${yaml ? 'YAML' : 'JSON'}: ${(error as Error).message}`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw configError(`${file}: must hold an object`)
  return expandEnvironment(value) as Record<string, unknown>
}

/** A checked definition: from a file (its path) or an object; every sync is validated. */
export function loadDefinition(pathOrObject: string | Definition): { definition: Definition; names: string[] } {
  const definition = (typeof pathOrObject === 'string' ? readObjectFile(pathOrObject) : pathOrObject) as Definition
  try {
    return { definition, names: native.validateDefinition(definition) }
  } catch (error) {
    throw toSyncError(error)
  }
}

/**
 * The options of one sync of a definition: the one named `name`, or the only one. `ERR_CONFIG`
 * when the name is not defined, or none is given and the definition holds several syncs.
 */
export function definedOptions(pathOrObject: string | Definition, name?: string): NativeSyncOptions {
  const { definition, names } = loadDefinition(pathOrObject)
  const chosen = name ?? (names.length === 1 ? names[0] : undefined)
  if (chosen === undefined) throw configError(`the definition holds several syncs (${names.join(', ')}): name the one to use`)
  if (!names.includes(chosen)) throw configError(`syncs.${chosen}: not defined (defined: ${names.join(', ')})`)
  return { ...definition.syncs[chosen], name: chosen }
}

/** One thing `apply` does for one collection (see README, "Definitions as code"). */
export type PlanStep =
  | { kind: 'copy'; namespace: string; index: string }
  | { kind: 'mapFields'; namespace: string; index: string; fields: string[] }
  | {
      kind: 'updateIndex'
      namespace: string
      index: string
      /** Configured settings the index does not have; each dynamic (set in place). */
      settings: { key: string; from: string | null; to: string; dynamic: boolean }[]
      /** The configured alias, added. */
      alias: string | null
      fields: string[]
    }
  | { kind: 'recopy'; namespace: string; index: string; reason: string }
  | { kind: 'remove'; namespace: string }
  | { kind: 'unchanged'; namespace: string; index: string }

/** The steps for one sync of a definition. */
export interface Plan {
  name: string
  steps: PlanStep[]
  /** Whether a step re-copies an index (the old one is dropped at the swap) or forgets a collection's position. */
  destructive: boolean
  /** The plan for people. */
  text: string
}

export interface PlanOptions {
  /** Only this sync of the definition (default: every one). */
  name?: string
}

export interface ApplyOptions extends PlanOptions {
  /** Carry out re-copies and removals too (default false: such a plan is refused with `ERR_CONFIG` before any change). */
  allowDestructive?: boolean
}

function chosenSyncs(pathOrObject: string | Definition, name: string | undefined): NativeSyncOptions[] {
  const { definition, names } = loadDefinition(pathOrObject)
  const chosen = name === undefined ? names : [name]
  return chosen.map((n) => definedOptions(definition, n))
}

/**
 * What `applyDefinition` would do, per sync: compares the definition with what exists (indices
 * and their mappings, checkpoints, the definition applied last). Changes nothing.
 */
export async function planDefinition(pathOrObject: string | Definition, options: PlanOptions = {}): Promise<Plan[]> {
  const plans: Plan[] = []
  for (const sync of chosenSyncs(pathOrObject, options.name)) {
    try {
      plans.push((await native.planSync(sync)) as Plan)
    } catch (error) {
      throw toSyncError(error)
    }
  }
  return plans
}

/**
 * Carries out the plan of each sync (or the named one): new collections copied, new mapping
 * fields mapped, changed ones re-copied into a new index and swapped in (readers of the alias never
 * see a half-filled index), removed ones' checkpoints deleted; resolves with the plans carried out.
 * Run it while the sync's service is stopped: the service continues from the saved positions.
 */
export async function applyDefinition(pathOrObject: string | Definition, options: ApplyOptions = {}): Promise<Plan[]> {
  const syncs = chosenSyncs(pathOrObject, options.name)
  if (options.allowDestructive !== true) {
    // Every sync's plan is checked before any is applied.
    const destructive = (await planDefinition(pathOrObject, options)).filter((p) => p.destructive)
    if (destructive.length > 0) {
      const text = destructive.map((p) => p.text).join('')
      throw configError(`the plan holds destructive steps (re-copies or removals); allow them to apply it (--allow-destructive)\n${text}`)
    }
  }
  const plans: Plan[] = []
  for (const sync of syncs) {
    try {
      plans.push((await native.applySync(sync, options.allowDestructive === true)) as Plan)
    } catch (error) {
      throw toSyncError(error)
    }
  }
  return plans
}
