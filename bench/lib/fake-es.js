// A loopback stand-in for Elasticsearch that accepts everything and stores nothing, so a run
// against it measures the tool's own cost (plus MongoDB's), not the search server's.
'use strict'

const http = require('node:http')

const INFO = JSON.stringify({
  name: 'bench-fake',
  cluster_name: 'bench-fake',
  version: { number: '8.15.0', distribution: 'elasticsearch' },
  tagline: 'You Know, for Search',
})
// The official client checks this header on every 2xx reply.
const HEADERS = { 'content-type': 'application/json', 'x-elastic-product': 'Elasticsearch' }

/** Number of bulk actions in an NDJSON body: each action line is followed by a source line,
 *  except `delete`. */
function bulkActions(body) {
  const actions = []
  let i = 0
  while (i < body.length) {
    let nl = body.indexOf(10, i)
    if (nl < 0) nl = body.length
    if (nl > i) {
      const head = body.toString('latin1', i, Math.min(nl, i + 12))
      const m = /^\{\s*"(index|create|update|delete)"/.exec(head)
      const action = m ? m[1] : Object.keys(JSON.parse(body.toString('utf8', i, nl)))[0]
      actions.push(action)
      if (action !== 'delete') {
        const next = body.indexOf(10, nl + 1)
        nl = next < 0 ? body.length : next
      }
    }
    i = nl + 1
  }
  return actions
}

const ITEM = { index: '{"index":{"status":201,"result":"created"}}', create: '{"create":{"status":201,"result":"created"}}', update: '{"update":{"status":200,"result":"updated"}}', delete: '{"delete":{"status":200,"result":"deleted"}}' }

function startFakeEs() {
  const stats = { bulkRequests: 0, actions: 0, bytes: 0, maxInFlight: 0, other: {} }
  let inFlight = 0
  const server = http.createServer((req, res) => {
    // Requests being received or answered at once: shows how many `_bulk` a tool keeps open.
    inFlight++
    stats.maxInFlight = Math.max(stats.maxInFlight, inFlight)
    res.on('close', () => inFlight--)
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const path = req.url.split('?')[0]
      if (req.method === 'POST' && (path === '/_bulk' || path.endsWith('/_bulk'))) {
        const actions = bulkActions(body)
        stats.bulkRequests++
        stats.actions += actions.length
        stats.bytes += body.length
        res.writeHead(200, HEADERS)
        res.end(`{"took":1,"errors":false,"items":[${actions.map((a) => ITEM[a]).join(',')}]}`)
        return
      }
      const key = `${req.method} ${path}`
      stats.other[key] = (stats.other[key] || 0) + 1
      if (req.method === 'GET' && path === '/') {
        res.writeHead(200, HEADERS)
        res.end(INFO)
      } else if (req.method === 'HEAD' && /^\/[^/_][^/]*$/.test(path)) {
        res.writeHead(200, HEADERS)
        res.end()
      } else if (req.method === 'PUT' && /^\/[^/_][^/]*$/.test(path)) {
        res.writeHead(200, HEADERS)
        res.end(JSON.stringify({ acknowledged: true, shards_acknowledged: true, index: path.slice(1) }))
      } else {
        res.writeHead(404, HEADERS)
        res.end(JSON.stringify({ error: { type: 'not_implemented', reason: `${key} is not faked` }, status: 404 }))
      }
    })
  })
  server.keepAliveTimeout = 60000
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const url = `http://127.0.0.1:${server.address().port}`
      resolve({
        url,
        stats,
        reset: () => Object.assign(stats, { bulkRequests: 0, actions: 0, bytes: 0, maxInFlight: 0, other: {} }),
        close: () => new Promise((r) => {
          server.closeAllConnections()
          server.close(() => r())
        }),
      })
    })
  })
}

module.exports = { startFakeEs, bulkActions }
