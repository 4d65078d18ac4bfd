// Plain fetch helpers for the harness's own Elasticsearch calls (checks, counts, polling).
'use strict'

async function esRequest(esUrl, method, path, body, { ndjson = false, timeoutMs = 30000 } = {}) {
  const res = await fetch(esUrl + path, {
    method,
    headers: { 'content-type': ndjson ? 'application/x-ndjson' : 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  })
  const text = await res.text()
  let json = null
  try {
    json = text ? JSON.parse(text) : null
  } catch {
    json = { raw: text.slice(0, 300) }
  }
  return { status: res.status, body: json }
}

/** Documents in `index` after a refresh; null if the index does not exist. */
async function countDocs(esUrl, index) {
  await esRequest(esUrl, 'POST', `/${index}/_refresh`)
  const r = await esRequest(esUrl, 'GET', `/${index}/_count`)
  return r.status === 200 ? r.body.count : null
}

async function deleteIndex(esUrl, index) {
  try {
    await esRequest(esUrl, 'DELETE', `/${index}`)
  } catch {
    // best effort
  }
}

module.exports = { esRequest, countDocs, deleteIndex }
