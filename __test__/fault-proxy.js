// A loopback HTTP proxy in front of the real Elasticsearch server that injects the failures the
// local server cannot produce: connection resets, 429/503 replies, and per-item bulk rejections.
const http = require('node:http')

/**
 * Modes (set with `proxy.set(mode)`):
 *  { kind: 'pass' }                      forward everything
 *  { kind: 'reset' }                     destroy every connection (server down / connection reset)
 *  { kind: 'status', status: 503 }       answer every request with this status and an ES-style error
 *                                        (with `only: /regex/`: only requests whose path matches)
 *  { kind: 'rejectItems', every: 2 }     on `_bulk`, reject every n-th item with 429, forward the rest
 *  { kind: 'stall', ms: 3000 }           hold each request `ms`, then forward it (a stalled server;
 *                                        past the client's timeout, the server applies it late)
 *  { kind: 'slow', ms: 500 }             forward each request, then hold the reply `ms`
 *  { kind: 'resetAfter' }                forward each request, then destroy the connection
 *                                        instead of replying (the server applied what was lost)
 */
async function startFaultProxy(targetUrl) {
  const target = new URL(targetUrl)
  let mode = { kind: 'pass' }
  const counts = { requests: 0, injected: 0, rejectedItems: 0 }
  // The most recent requests (method, path, headers), for tests that check what was sent.
  const seen = []

  const forward = (method, path, headers, body) =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { host: target.hostname, port: target.port, method, path, headers: { ...headers, host: target.host, 'content-length': Buffer.byteLength(body) } },
        (res) => {
          const chunks = []
          res.on('data', (c) => chunks.push(c))
          res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }))
        },
      )
      req.on('error', reject)
      req.end(body)
    })

  async function rejectSomeItems(req, body, every) {
    const lines = body.toString('utf8').split('\n').filter((l) => l.length > 0)
    const items = []
    for (let i = 0; i < lines.length; ) {
      const action = JSON.parse(lines[i])
      const hasSource = !('delete' in action)
      items.push({ action, lines: lines.slice(i, i + (hasSource ? 2 : 1)) })
      i += hasSource ? 2 : 1
    }
    const rejected = items.map((_, i) => i % every === 0)
    const forwarded = items.filter((_, i) => !rejected[i])
    let forwardedItems = []
    if (forwarded.length > 0) {
      const res = await forward('POST', req.url, req.headers, forwarded.flatMap((it) => it.lines).join('\n') + '\n')
      forwardedItems = JSON.parse(res.body.toString('utf8')).items
    }
    let k = 0
    const out = items.map((it, i) => {
      if (!rejected[i]) return forwardedItems[k++]
      counts.rejectedItems++
      const op = Object.keys(it.action)[0]
      return { [op]: { _index: it.action[op]._index, _id: it.action[op]._id, status: 429, error: { type: 'es_rejected_execution_exception', reason: 'injected by the fault proxy' } } }
    })
    return { status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify({ errors: true, items: out })) }
  }

  const server = http.createServer((req, res) => {
    counts.requests++
    seen.push({ method: req.method, url: req.url, headers: req.headers })
    if (seen.length > 200) seen.shift()
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', async () => {
      const body = Buffer.concat(chunks)
      const current = mode
      try {
        if (current.kind === 'stall') {
          counts.injected++
          await new Promise((r) => setTimeout(r, current.ms))
        }
        if (current.kind === 'reset') {
          counts.injected++
          req.socket.destroy()
          return
        }
        if (current.kind === 'status' && (!current.only || current.only.test(req.url))) {
          counts.injected++
          res.writeHead(current.status, { 'content-type': 'application/json' })
          res.end(JSON.stringify({ error: { type: 'injected', reason: `injected ${current.status}` }, status: current.status }))
          return
        }
        const reply =
          current.kind === 'rejectItems' && req.url.split('?')[0].endsWith('/_bulk')
            ? await rejectSomeItems(req, body, current.every)
            : await forward(req.method, req.url, req.headers, body)
        if (current.kind === 'resetAfter') {
          counts.injected++
          req.socket.destroy()
          return
        }
        if (current.kind === 'slow') {
          counts.injected++
          await new Promise((r) => setTimeout(r, current.ms))
        }
        if (res.destroyed) return
        const headers = { ...reply.headers }
        delete headers['content-length']
        delete headers['transfer-encoding']
        res.writeHead(reply.status, headers)
        res.end(reply.body)
      } catch (e) {
        res.writeHead(502, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ error: { type: 'proxy_error', reason: String(e) } }))
      }
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  return {
    url: `http://127.0.0.1:${port}`,
    counts,
    seen,
    set(next) {
      mode = next
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(resolve)
      }),
  }
}

module.exports = { startFaultProxy }
