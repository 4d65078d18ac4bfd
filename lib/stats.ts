// `sync.stats()`: the addon's figures, with times as Dates.
import type { NativeCollectionStats, NativeSyncStats } from '../index.js'

/** One collection's figures. */
export interface CollectionStats extends Omit<NativeCollectionStats, 'lastChangeAt' | 'lastCheckpointAt'> {
  /** Cluster time of the newest change applied (to the second; MongoDB's clock). */
  lastChangeAt?: Date
  /** When its checkpoint was last saved (this machine's clock). */
  lastCheckpointAt?: Date
}

/** The totals since the object was created, the current state, and per-collection figures. */
export interface SyncStats extends Omit<NativeSyncStats, 'collections'> {
  /** By `"db.collection"`: every collection the sync has worked on. */
  collections: Record<string, CollectionStats>
}

function collectionStats(native: NativeCollectionStats): CollectionStats {
  const { lastChangeAt, lastCheckpointAt, ...rest } = native
  const stats: CollectionStats = rest
  if (lastChangeAt !== undefined) stats.lastChangeAt = new Date(lastChangeAt)
  if (lastCheckpointAt !== undefined) stats.lastCheckpointAt = new Date(lastCheckpointAt)
  return stats
}

export function syncStats(native: NativeSyncStats): SyncStats {
  const collections: Record<string, CollectionStats> = {}
  for (const [namespace, stats] of Object.entries(native.collections)) collections[namespace] = collectionStats(stats)
  return { ...native, collections }
}
