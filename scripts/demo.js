#!/usr/bin/env node
// A 30-second tour of mongo-elastic-sync: copy two MongoDB collections into Elasticsearch,
// then stream live changes.
//
//   npm run demo                                   starts throwaway local servers
//   MONGO_URL=... ES_URL=... node scripts/demo.js  uses yours: creates a new database and
//                                                  new indices, drops nothing
'use strict'

const { MongoClient, ObjectId, Decimal128, Int32, Double, Long } = require('mongodb')
const { MongoElasticSync } = require('..')
const { startServers } = require('./local-servers')

const BIG = '9007199254740993' // 2^53 + 1: a JavaScript number cannot hold it
const t0 = Date.now()
const heading = (title) => console.log(`\n== ${title} ==`)
const log = (msg) => console.log(`  ${msg}`)
const at = () => `[+${((Date.now() - t0) / 1000).toFixed(1)}s]`
const redact = (url) => url.replace(/\/\/([^:/@]+):[^@/]*@/, '//$1:***@')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const pick = (list) => list[Math.floor(Math.random() * list.length)]
const fail = (code, message) => Object.assign(new Error(message), { code })

let servers, client, sync, syncRunning = false, cleaning, interrupted = false
// Idempotent; shared by the normal end, errors and Ctrl-C. Bounded, so a dead server cannot hang it.
// On Ctrl-C, local-servers has already killed the servers it started: no point flushing to them.
function cleanup() {
  cleaning ??= (async () => {
    if (syncRunning && !(interrupted && servers?.started)) await Promise.race([sync.stop(), sleep(10_000)]).catch(() => {})
    await client?.close().catch(() => {})
    await servers?.stop().catch(() => {})
  })()
  return cleaning
}
process.on('SIGINT', () => {
  if (interrupted) process.exit(130) // second Ctrl-C: give up on cleaning up
  interrupted = true
  console.log('\ninterrupted; cleaning up… (Ctrl-C again to force)')
  cleanup().finally(() => process.exit(130))
})

// Elasticsearch over fetch. fetch refuses URLs with credentials, so they become a header.
let esRoot, esAuth
async function es(method, path, body) {
  const headers = { 'content-type': 'application/json', ...(esAuth && { authorization: esAuth }) }
  const res = await fetch(esRoot + path, { method, headers, body: body && JSON.stringify(body) })
  return { status: res.status, text: await res.text() }
}
async function esCount(index) {
  await es('POST', `/${index}/_refresh`)
  const r = await es('GET', `/${index}/_count`)
  return r.status === 200 ? JSON.parse(r.text).count : -1
}
async function esShipped(index) {
  for (const query of [{ term: { 'status.keyword': 'shipped' } }, { match: { status: 'shipped' } }]) {
    const r = await es('POST', `/${index}/_search`, { size: 0, query })
    const total = r.status === 200 ? JSON.parse(r.text).hits.total : 0
    const n = typeof total === 'number' ? total : total.value
    if (n > 0) return n
  }
  return 0
}
// The `_source` object cut out of the raw response text (JSON.parse would round the big Long).
function rawSource(text) {
  const start = text.indexOf('{', text.indexOf('"_source"'))
  for (let i = start, depth = 0, inString = false; i >= 0 && i < text.length; i++) {
    const c = text[i]
    if (inString) {
      if (c === '\\') i++
      else if (c === '"') inString = false
    } else if (c === '"') inString = true
    else if (c === '{') depth++
    else if (c === '}' && --depth === 0) return text.slice(start, i + 1)
  }
  throw fail('ERR_DEMO', `no _source in ${text.slice(0, 200)}`)
}

function makeOrder(i, customers) {
  const items = Array.from({ length: 1 + (i % 3) }, () => ({
    sku: `SKU-${1000 + Math.floor(Math.random() * 500)}`,
    qty: new Int32(1 + Math.floor(Math.random() * 4)),
    price: new Double(Math.round(Math.random() * 9900 + 100) / 100),
  }))
  const total = items.reduce((sum, it) => sum + it.qty.value * it.price.value, 0)
  return {
    _id: new ObjectId(),
    customer: pick(customers)._id,
    total: Decimal128.fromString(total.toFixed(2)),
    placedAt: new Date(Date.now() - Math.floor(Math.random() * 90 * 86_400_000)),
    items,
    status: pick(['pending', 'paid', 'delivered', 'cancelled']), // never 'shipped' yet
    loyaltyPoints: i % 100 === 0 ? Long.fromString(BIG) : Long.fromNumber(Math.floor(total)),
  }
}

async function main() {
  heading('1. Servers')
  servers = await startServers({ name: 'demo' })
  // Throwaway servers: fixed names. Yours: a fresh database and indices, nothing else touched.
  const fresh = servers.started && !process.env.MONGO_URL && !process.env.ES_URL
  log(`MongoDB        ${redact(servers.mongoUrl)}${process.env.MONGO_URL ? ' (MONGO_URL)' : ' (started)'}`)
  log(`Elasticsearch  ${redact(servers.esUrl)}${process.env.ES_URL ? ' (ES_URL)' : ' (started)'}`)
  const esUrl = new URL(servers.esUrl)
  if (esUrl.username) esAuth = `Basic ${Buffer.from(`${decodeURIComponent(esUrl.username)}:${decodeURIComponent(esUrl.password)}`).toString('base64')}`
  esUrl.username = esUrl.password = ''
  esRoot = esUrl.href.replace(/\/$/, '')

  heading('2. Sample data')
  const dbName = fresh ? 'demo_shop' : `demo_shop_${Date.now()}`
  const ordersIndex = fresh ? 'orders' : `${dbName}-orders`
  const customersIndex = `${dbName}-customers`
  client = await new MongoClient(servers.mongoUrl).connect()
  const db = client.db(dbName)
  if (fresh) await db.dropDatabase()
  else log(`using new database ${dbName} and indices ${ordersIndex}, ${customersIndex} (left in place)`)
  const customers = Array.from({ length: 200 }, (_, i) => ({
    _id: `cust-${String(i + 1).padStart(4, '0')}`,
    name: `Customer ${i + 1}`,
    email: `customer${i + 1}@example.com`,
    since: new Date(Date.UTC(2020, i % 12, 1 + (i % 28))),
  }))
  const orders = Array.from({ length: 2000 }, (_, i) => makeOrder(i, customers))
  await db.collection('customers').insertMany(customers)
  await db.collection('orders').insertMany(orders)
  log(`${dbName}.orders     ${orders.length} docs (ObjectId, Decimal128, Date, Int32, Double, Long up to ${BIG})`)
  log(`${dbName}.customers  ${customers.length} docs (string _id "cust-0001"…)`)

  heading('3. Sync: initial copy')
  sync = new MongoElasticSync({
    name: `demo-${dbName}`,
    mongo: { uri: servers.mongoUrl },
    elasticsearch: { node: servers.esUrl },
    collections: [
      fresh ? `${dbName}.orders` : { namespace: `${dbName}.orders`, index: ordersIndex },
      { namespace: `${dbName}.customers`, index: customersIndex },
    ],
    batch: { flushIntervalMs: 200 },
  })
  let batches = 0
  let onState = () => {}
  sync.onEvent((e) => {
    if (e.type === 'state') {
      log(`${at()} state → ${e.state}${e.error ? ` (${e.error.code})` : ''}`)
      onState(e)
    } else if (e.type === 'progress' && e.done) log(`${at()} copied ${e.copied} of ${e.totalEstimate}  ${e.namespace} → ${e.index}`)
    else if (e.type === 'batch') batches++
    else if (e.type === 'retry') log(`${at()} retry #${e.attempt} in ${e.delayMs} ms: ${e.cause}`)
    else if (e.type === 'deadLetter') log(`${at()} dead letter ${e.index}/${e.id}: ${e.reason}`)
    else if (e.type === 'warning') log(`${at()} warning ${e.namespace}: ${e.message}`)
  })
  const streaming = new Promise((resolve, reject) => {
    onState = (e) => {
      if (e.state === 'streaming') resolve()
      else if (e.state === 'failed') reject(fail(e.error?.code ?? 'ERR_DEMO', e.error?.message ?? 'sync failed'))
    }
    setTimeout(() => reject(fail('ERR_DEMO_TIMEOUT', 'not streaming after 60 s')), 60_000).unref()
  })
  streaming.catch(() => {}) // start() may reject first; this one is awaited below
  syncRunning = true
  await sync.start()
  await streaming

  heading('4. Live changes (while streaming)')
  const coll = db.collection('orders')
  const ids = orders.map((o) => o._id)
  await coll.bulkWrite(ids.slice(0, 50).map((_id) => ({
    updateOne: { filter: { _id }, update: { $set: { status: 'shipped', shippedAt: new Date() } } },
  })))
  log('updated  50 orders: status → shipped')
  await coll.bulkWrite([
    ...ids.slice(50, 55).map((_id, i) => ({ replaceOne: { filter: { _id }, replacement: { ...makeOrder(i + 1, customers), _id, status: 'refunded' } } })),
    ...ids.slice(55, 65).map((_id) => ({ deleteOne: { filter: { _id } } })),
  ])
  log('replaced  5 orders (status refunded), deleted 10')
  await coll.bulkWrite(Array.from({ length: 20 }, (_, i) => ({ insertOne: { document: makeOrder(i + 1, customers) } })))
  const lastWrite = Date.now()
  log('inserted 20 new orders')

  heading('5. Waiting for Elasticsearch to catch up')
  const wantCount = await coll.countDocuments()
  const wantShipped = await coll.countDocuments({ status: 'shipped' })
  let count, shipped
  for (;;) {
    count = await esCount(ordersIndex)
    shipped = count === wantCount ? await esShipped(ordersIndex) : 0
    if (count === wantCount && shipped >= wantShipped) break
    if (Date.now() - lastWrite > 30_000) throw fail('ERR_DEMO_TIMEOUT', `after 30 s ${ordersIndex} has ${count}/${wantCount} docs, ${shipped}/${wantShipped} shipped`)
    await sleep(200)
  }
  log(`visible ${Date.now() - lastWrite} ms after the last write: ${count} docs, ${shipped} shipped`)

  heading('6. What landed')
  for (const [name, index] of [['orders', ordersIndex], ['customers', customersIndex]]) {
    const ns = `${dbName}.${name}`.padEnd(dbName.length + 11)
    log(`${ns} ${String(await db.collection(name).countDocuments()).padStart(5)} in MongoDB  →  ${index}: ${await esCount(index)}`)
  }
  const raw = await es('GET', `/${ordersIndex}/_doc/${ids[0]}`)
  if (raw.status !== 200) throw fail('ERR_DEMO', `GET ${ordersIndex}/_doc/${ids[0]}: HTTP ${raw.status}`)
  log(`${ordersIndex}/_doc/${ids[0]}  _source, raw as stored:`)
  log(rawSource(raw.text))
  log(`note loyaltyPoints ${BIG} (> 2^53) kept every digit; JSON.parse would make it ${Number(BIG)}`)
  log(`stats: ${JSON.stringify(sync.stats())}`)
  log(`batch events: ${batches}`)

  heading('7. Stop')
  await sync.stop()
  syncRunning = false
  log('stopped; checkpoint saved — run again with the same name and servers and it resumes')
}

main()
  .then(async () => {
    await cleanup()
    process.exit(0)
  })
  .catch(async (e) => {
    if (interrupted) return // the SIGINT handler exits; errors from closing clients are expected
    const code = e?.code ?? 'ERR_DEMO'
    const message = String(e?.message ?? e)
    console.error(`\ndemo failed: ${code}: ${message.startsWith(code) ? message.slice(code.length + 2) : message}`)
    await cleanup()
    process.exit(1)
  })
