// The benchmark dataset: deterministic (seeded PRNG) documents of ~1 KB with a realistic mix of
// BSON types. Document i depends only on the seed and the documents before it, so the first N
// documents of a larger run are the same as those of a smaller one.
'use strict'

const { ObjectId, Long, Int32, Double, Decimal128, Binary, UUID, BSON } = require('mongodb')

const DEFAULT_SEED = 20241123

// sfc32: small, fast, good enough statistically, and reproducible across Node versions.
function prng(seed) {
  let a = 0x9e3779b9
  let b = 0x243f6a88
  let c = 0xb7e15162
  let d = seed >>> 0
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0
    let t = (a + b) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    d = (d + 1) | 0
    t = (t + d) | 0
    c = (c + t) | 0
    return (t >>> 0) / 4294967296
  }
  for (let i = 0; i < 20; i++) next() // mix the seed in
  const r = {
    float: next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    bool: (p = 0.5) => next() < p,
    bytes: (n) => {
      const buf = Buffer.alloc(n)
      for (let i = 0; i < n; i++) buf[i] = Math.floor(next() * 256)
      return buf
    },
  }
  return r
}

const WORDS = (
  'alpha beta gamma delta river mountain coffee paper window garden silver orange market ' +
  'station winter summer signal vector kernel socket planet harbor forest copper engine ' +
  'rapid quiet bright heavy modern classic local global simple secure stable custom'
).split(' ')
const CITIES = ['Lisbon', 'Berlin', 'Osaka', 'Quito', 'Nairobi', 'Oslo', 'Austin', 'Porto', 'Lyon', 'Perth']
const STATUSES = ['new', 'paid', 'shipped', 'delivered', 'returned', 'cancelled']

function words(r, n) {
  const out = []
  for (let i = 0; i < n; i++) out.push(r.pick(WORDS))
  return out.join(' ')
}

function money(r, maxCents) {
  const cents = r.int(0, maxCents)
  return Decimal128.fromString(`${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`)
}

const BASE_TIME = Date.UTC(2024, 0, 1) // fixed, so the data does not depend on when it is made
const TWO_POW_53 = 2n ** 53n

// A random (version 4) UUID, BSON Binary subtype 4.
function uuidV4(b) {
  b[6] = (b[6] & 0x0f) | 0x40
  b[8] = (b[8] & 0x3f) | 0x80
  return new UUID(b)
}

/** A generator of `count` documents; same seed → same documents. */
function* generate(count, seed = DEFAULT_SEED) {
  const r = prng(seed)
  for (let i = 0; i < count; i++) {
    // ObjectId: increasing timestamp part plus random bytes, like real inserts.
    const oid = Buffer.alloc(12)
    oid.writeUInt32BE(Math.floor(BASE_TIME / 1000) + i, 0)
    r.bytes(8).copy(oid, 4)
    // Int64: about one in eight above 2^53 (where JS numbers lose digits).
    const big = r.bool(0.125)
    const seq64 = big
      ? Long.fromBigInt(TWO_POW_53 * BigInt(r.int(1, 1000)) + BigInt(r.int(1, 2 ** 30)))
      : Long.fromNumber(r.int(0, 2 ** 40))
    const nItems = r.int(2, 4)
    const items = []
    for (let k = 0; k < nItems; k++) {
      items.push({
        sku: `SKU-${r.int(10000, 99999)}`,
        qty: new Int32(r.int(1, 20)),
        price: new Double(r.int(100, 99999) / 100),
        total: money(r, 999999),
        note: words(r, r.int(2, 5)),
      })
    }
    yield {
      _id: new ObjectId(oid),
      seq: new Int32(i),
      name: `${r.pick(WORDS)} ${r.pick(WORDS)} ${i}`,
      email: `user${r.int(1, 1e6)}@example.com`,
      status: r.pick(STATUSES),
      active: r.bool(0.8),
      verified: r.bool(0.3),
      rating: new Double(Math.round(r.float() * 5000) / 1000),
      count32: new Int32(r.int(-100000, 100000)),
      seq64,
      balance: money(r, 99999999),
      createdAt: new Date(BASE_TIME + r.int(0, 365 * 86400) * 1000 + r.int(0, 999)),
      updatedAt: new Date(BASE_TIME + r.int(365 * 86400, 400 * 86400) * 1000),
      description: words(r, r.int(25, 35)),
      tags: Array.from({ length: r.int(1, 5) }, () => r.pick(WORDS)),
      customer: {
        name: `${r.pick(WORDS)} ${r.pick(WORDS)}`,
        address: {
          street: `${r.int(1, 999)} ${r.pick(WORDS)} street`,
          city: r.pick(CITIES),
          zip: String(r.int(10000, 99999)),
          geo: { lat: new Double(r.int(-90000, 90000) / 1000), lon: new Double(r.int(-180000, 180000) / 1000) },
        },
        loyalty: { level: new Int32(r.int(0, 5)), since: new Date(BASE_TIME - r.int(0, 2000) * 86400000) },
      },
      items,
      checksum: new Binary(r.bytes(r.int(24, 40))),
      ref: uuidV4(r.bytes(16)),
    }
  }
}

/** Average BSON size of the first `n` documents (for the report). */
function averageBsonSize(n = 1000, seed = DEFAULT_SEED) {
  let total = 0
  let count = 0
  for (const doc of generate(n, seed)) {
    total += BSON.calculateObjectSize(doc)
    count++
  }
  return Math.round(total / count)
}

/** True if the value needs more than 53 bits (used to describe the dataset). */
function isBigInt64(long) {
  return Long.isLong(long) && (long.greaterThan(Long.fromNumber(Number.MAX_SAFE_INTEGER)) || long.lessThan(Long.fromNumber(Number.MIN_SAFE_INTEGER)))
}

module.exports = { generate, averageBsonSize, isBigInt64, prng, DEFAULT_SEED }
