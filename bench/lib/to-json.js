// BSON → JSON as a competent developer writes it for the Node script: ObjectId as hex, Int64 past
// 2^53 and Decimal128 as strings (Elasticsearch coerces numeric strings, so no digit is lost),
// Binary as base64 (UUIDs in canonical form), dates as ISO strings. `_id` becomes the ES `_id`.
// Also used to pre-serialise the raw `_bulk` load, so that load sends what the script sends.
'use strict'

const { ObjectId, Long, Binary } = require('mongodb')

function toJson(v) {
  if (v === null || typeof v !== 'object') return typeof v === 'bigint' ? v.toString() : v
  if (Array.isArray(v)) return v.map(toJson)
  if (v instanceof Date) return v.toISOString()
  switch (v._bsontype) {
    case 'ObjectId':
      return v.toHexString()
    case 'Long':
      return v.lessThanOrEqual(MAX_SAFE) && v.greaterThanOrEqual(MIN_SAFE) ? v.toNumber() : v.toString()
    case 'Decimal128':
      return v.toString()
    case 'Binary':
      return v.sub_type === Binary.SUBTYPE_UUID ? v.toUUID().toHexString(true) : v.toString('base64')
    case 'Double':
    case 'Int32':
      return v.valueOf()
    case undefined:
      break
    default:
      return String(v)
  }
  const out = {}
  for (const k of Object.keys(v)) out[k] = toJson(v[k])
  return out
}

const MAX_SAFE = Long.fromNumber(Number.MAX_SAFE_INTEGER)
const MIN_SAFE = Long.fromNumber(Number.MIN_SAFE_INTEGER)

/** `{ id, source }` for one MongoDB document. */
function toEsDoc(doc) {
  const { _id, ...rest } = doc
  return { id: _id instanceof ObjectId ? _id.toHexString() : String(_id), source: toJson(rest) }
}

module.exports = { toJson, toEsDoc }
