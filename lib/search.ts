// The search API's types and `SearchClient`: reading synced indices back without raw query DSL.
//
// Numbers: Elasticsearch holds Int64 values exactly, and so does the engine. Integers within
// ±(2^53 − 1) come back as `number`; larger ones as `bigint` (exact), as a transform receives
// them. In `where`, give Int64 values past 2^53 as `bigint` or as a string of digits.
import * as native from '../index.js'
import type { SearchClientOptions as NativeSearchClientOptions } from '../index.js'
import { toSyncError } from './errors.js'

/** A value to match: strings, numbers, booleans; `bigint` or digit strings for Int64 past 2^53. */
export type SearchValue = string | number | boolean | bigint

/** A range; give `gt` or `gte`, `lt` or `lte`. Dates as ISO-8601 strings or epoch milliseconds. */
export interface SearchRange {
  gte?: SearchValue
  gt?: SearchValue
  lte?: SearchValue
  lt?: SearchValue
}

/** Per field (dotted path, e.g. `'address.city'`): an exact value, any of a list, or a range. */
export type SearchWhere = Record<string, SearchValue | SearchValue[] | SearchRange>

/** `'field'` (ascending), `'-field'` (descending) or `{ field, order }`. */
export type SearchSort = string | { field: string; order?: 'asc' | 'desc' }

export interface SearchRequest {
  /** The index or alias; required unless `cursor` is given. */
  index?: string
  where?: SearchWhere
  /** `_source` fields to return (`*` wildcards allowed); all when absent. */
  fields?: string[]
  /** `_source` fields to leave out. */
  exclude?: string[]
  /** Sort keys, in order; a unique tiebreaker is added so that pages never overlap. */
  sort?: SearchSort[]
  /** Documents per page (default 20, at most `search.maxPageSize`, default 1000). */
  size?: number
  /** Offset paging: page number from 1; refused past the index's `max_result_window`. */
  page?: number
  /** Cursor paging: `meta.nextCursor` of the previous page (carries the query and sort). */
  cursor?: string
}

export interface SearchMeta {
  /** Documents matching, in the snapshot the pages read (exact). */
  total: number
  pageSize: number
  /** The page's number (1 for the first). */
  page?: number
  /** With offset paging. */
  totalPages?: number
  hasNext: boolean
  hasPrevious: boolean
  /** With cursor paging and more to read: pass it as `cursor` for the next page. */
  nextCursor?: string
  /** The document fields the page holds (after `fields` and `exclude`). */
  selectedFields: string[]
}

/** A document: its `_id` and the selected fields. */
export type SearchDocument = { _id: string } & Record<string, unknown>

export interface SearchPage<T extends Record<string, unknown> = SearchDocument> {
  data: T[]
  meta: SearchMeta
}

export interface IndexSummary {
  index: string
  aliases: string[]
  health: string
  status: string
  docsCount: number
}

export interface FieldInfo {
  /** Dotted path, e.g. `address.city`, or `title.keyword` for a multi-field. */
  name: string
  /** The mapped type (`keyword`, `long`, `date`, `object`…). */
  type: string
  /** A multi-field: searchable, but not a field of the documents. */
  subField: boolean
}

export type SearchClientOptions = NativeSearchClientOptions

/** What `search`, `indices` and `fields` reject with, as SyncErrors. */
export async function call<T>(run: () => Promise<unknown>): Promise<T> {
  try {
    return (await run()) as T
  } catch (error) {
    throw toSyncError(error)
  }
}

/** Searches the indices of a cluster without a sync, with the same query model as `sync.search()`. */
export class SearchClient {
  readonly #native: native.SearchClient

  /** `{ elasticsearch, search? }`: the connection as a sync's; throws `ERR_CONFIG` naming a bad field. */
  constructor(options: SearchClientOptions) {
    try {
      this.#native = new native.SearchClient(options)
    } catch (error) {
      throw toSyncError(error)
    }
  }

  /** One page; rejects with `ERR_SEARCH_INPUT` (the request is wrong) or `ERR_SEARCH` (the server). */
  search<T extends Record<string, unknown> = SearchDocument>(request: SearchRequest): Promise<SearchPage<T>> {
    return call(() => this.#native.search(request as Record<string, unknown>))
  }

  /** The searchable indices (any not starting with `.`, unless `search.indices` lists them). */
  indices(): Promise<IndexSummary[]> {
    return call(() => this.#native.indices())
  }

  /** The fields of `index`, flattened to dotted paths, with their mapped types. */
  fields(index: string): Promise<FieldInfo[]> {
    return call(() => this.#native.fields(index))
  }
}
