// TLS test infrastructure: a throw-away certificate authority made with the `openssl` CLI, and a
// TLS-terminating TCP proxy that puts TLS in front of the plain local servers (SecantusDB speaks
// the MongoDB wire protocol over plain TCP, osmem-server speaks Elasticsearch REST over plain
// HTTP). Both protocols work through the proxy because it only unwraps TLS and pipes bytes.
//
//   const certs = makeCerts()                     // { caFile, serverCertFile, ..., cleanup() }
//   const proxy = await startTlsProxy({ target: '127.0.0.1:9200', certs, requireClientCert: true })
//   proxy.url('https')                             // 'https://127.0.0.1:PORT'
//   proxy.counts                                   // { accepted, tlsErrors, lastTlsError }
//   await proxy.close(); certs.cleanup()
//
// MongoDB through the proxy: SecantusDB's `hello` advertises its real (plain) address as the
// replica-set member, so `replicaSet=secantus` makes a driver leave the proxy. Connect with
// `directConnection=true` and no `replicaSet`:
//   mongodb://127.0.0.1:PORT/?directConnection=true&tls=true&tlsCAFile=<caFile>
//
// CommonJS, Node >= 20, node: built-ins only (plus /usr/bin/openssl).
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const net = require('node:net')
const crypto = require('node:crypto')
const tls = require('node:tls')
const { execFileSync } = require('node:child_process')

const OPENSSL = fs.existsSync('/usr/bin/openssl') ? '/usr/bin/openssl' : 'openssl'

function openssl(args, cwd) {
  try {
    return execFileSync(OPENSSL, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (e) {
    const stderr = e.stderr ? e.stderr.toString('utf8') : ''
    throw new Error(`openssl ${args.join(' ')} failed: ${stderr || e.message}`)
  }
}

// ASN.1 GeneralizedTime as `openssl ca -startdate/-enddate` accepts it: YYYYMMDDHHMMSSZ
function asn1Time(date) {
  return date.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z')
}

const DAY_MS = 24 * 60 * 60 * 1000

function caConfig(dbDir) {
  // Extension sections follow what rustls/webpki insist on: v3 end-entity certificates with a
  // subjectAltName, basicConstraints CA:FALSE and a matching extendedKeyUsage.
  return `
[ ca ]
default_ca = CA_default

[ CA_default ]
dir = ${dbDir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
preserve = yes

[ policy_any ]
commonName = supplied
organizationName = optional
organizationalUnitName = optional

[ req ]
distinguished_name = req_dn
prompt = no

[ req_dn ]
CN = unused

[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer

[ client_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
`
}

/**
 * Creates a test PKI with openssl (EC P-256 keys, PKCS#8 PEM, validity starting one day in the
 * past). Synchronous; takes well under a second.
 *
 * Files in `dir`: ca.pem, ca-key.pem, server.pem, server-key.pem, server-combined.pem,
 * client.pem, client-key.pem, client-combined.pem, other-ca.pem, other-ca-key.pem.
 */
function makeCerts(dir) {
  const ownDir = !dir
  dir = dir ? path.resolve(dir) : fs.mkdtempSync(path.join(os.tmpdir(), 'mes-tls-'))
  fs.mkdirSync(dir, { recursive: true })
  const p = (name) => path.join(dir, name)

  const startdate = asn1Time(new Date(Date.now() - DAY_MS))
  const enddate = asn1Time(new Date(Date.now() + 2 * 365 * DAY_MS))

  const genKey = (file) => {
    // genpkey writes PKCS#8 ("-----BEGIN PRIVATE KEY-----")
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p(file)])
  }

  // One openssl `ca` database per issuing CA (`openssl ca` is what allows a backdated -startdate).
  const makeCa = (name, cn) => {
    const db = p(`${name}-db`)
    fs.mkdirSync(path.join(db, 'newcerts'), { recursive: true })
    fs.writeFileSync(path.join(db, 'index.txt'), '')
    fs.writeFileSync(path.join(db, 'index.txt.attr'), 'unique_subject = no\n')
    fs.writeFileSync(path.join(db, 'serial'), `${crypto.randomBytes(8).toString('hex').replace(/^./, '1')}\n`)
    const cnf = path.join(db, 'openssl.cnf')
    fs.writeFileSync(cnf, caConfig(db))
    genKey(`${name}-key.pem`)
    const csr = path.join(db, `${name}.csr`)
    openssl(['req', '-new', '-config', cnf, '-key', p(`${name}-key.pem`), '-subj', `/O=mongo-elastic-sync/CN=${cn}`, '-out', csr])
    openssl([
      'ca', '-batch', '-notext', '-selfsign', '-config', cnf, '-keyfile', p(`${name}-key.pem`), '-in', csr,
      '-extensions', 'v3_ca', '-startdate', startdate, '-enddate', enddate, '-out', p(`${name}.pem`),
    ])
    return { cnf, cert: p(`${name}.pem`), key: p(`${name}-key.pem`) }
  }

  const issue = (ca, name, cn, ext) => {
    genKey(`${name}-key.pem`)
    const csr = path.join(dir, `${name}.csr`)
    openssl(['req', '-new', '-config', ca.cnf, '-key', p(`${name}-key.pem`), '-subj', `/O=mongo-elastic-sync/CN=${cn}`, '-out', csr])
    openssl([
      'ca', '-batch', '-notext', '-config', ca.cnf, '-cert', ca.cert, '-keyfile', ca.key, '-in', csr,
      '-extensions', ext, '-startdate', startdate, '-enddate', enddate, '-out', p(`${name}.pem`),
    ])
    fs.rmSync(csr, { force: true })
    fs.writeFileSync(p(`${name}-combined.pem`), fs.readFileSync(p(`${name}.pem`), 'utf8') + fs.readFileSync(p(`${name}-key.pem`), 'utf8'))
  }

  const ca = makeCa('ca', 'mongo-elastic-sync test CA')
  issue(ca, 'server', 'localhost', 'server_ext')
  issue(ca, 'client', 'sync-client', 'client_ext')
  makeCa('other-ca', 'mongo-elastic-sync unrelated CA')

  return {
    dir,
    caFile: p('ca.pem'),
    caKeyFile: p('ca-key.pem'),
    serverCertFile: p('server.pem'),
    serverKeyFile: p('server-key.pem'),
    serverCombinedFile: p('server-combined.pem'),
    clientCertFile: p('client.pem'),
    clientKeyFile: p('client-key.pem'),
    clientCombinedFile: p('client-combined.pem'),
    otherCaFile: p('other-ca.pem'),
    cleanup() {
      if (ownDir) fs.rmSync(dir, { recursive: true, force: true })
      else
        for (const f of ['ca', 'server', 'client', 'other-ca']) {
          for (const suffix of ['.pem', '-key.pem', '-combined.pem']) fs.rmSync(p(f + suffix), { force: true })
          fs.rmSync(p(`${f}-db`), { recursive: true, force: true })
        }
    },
  }
}

function parseTarget(target) {
  if (typeof target !== 'string') throw new TypeError('target must be "host:port"')
  const s = target.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '')
  const i = s.lastIndexOf(':')
  if (i <= 0) throw new TypeError(`target must be "host:port", got ${JSON.stringify(target)}`)
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) }
}

/**
 * TLS-terminating proxy on 127.0.0.1:<random port> that forwards every connection, as plain TCP,
 * to `target` ("host:port", or a URL whose host:port is used). Presents the server certificate
 * from `certs` (see makeCerts). With `requireClientCert`, clients must present a certificate
 * signed by the same CA.
 */
async function startTlsProxy({ target, certs, requireClientCert = false }) {
  const { host: targetHost, port: targetPort } = parseTarget(target)
  const counts = { accepted: 0, tlsErrors: 0, lastTlsError: null }
  const sockets = new Set()

  const track = (s) => {
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
  }

  const server = tls.createServer(
    {
      cert: fs.readFileSync(certs.serverCertFile),
      key: fs.readFileSync(certs.serverKeyFile),
      ca: fs.readFileSync(certs.caFile),
      requestCert: !!requireClientCert,
      rejectUnauthorized: !!requireClientCert,
    },
    (client) => {
      counts.accepted++
      track(client)
      const upstream = net.connect({ host: targetHost, port: targetPort })
      track(upstream)
      upstream.setNoDelay(true)
      client.setNoDelay(true)
      const done = () => {
        client.destroy()
        upstream.destroy()
      }
      client.on('error', done)
      upstream.on('error', done)
      client.on('close', done)
      upstream.on('close', done)
      client.pipe(upstream)
      upstream.pipe(client)
    },
  )

  server.on('connection', track)
  server.on('tlsClientError', (err, socket) => {
    counts.tlsErrors++
    const msg = (err && err.message ? err.message : String(err)).trim()
    // A client certificate that fails verification is rejected by node after the handshake, and
    // the error is then only "socket hang up"; the socket still says why.
    const why = socket && socket.authorizationError
    counts.lastTlsError = why && !msg.includes(why) ? `${why}: ${msg}` : msg
    if (socket) socket.destroy()
  })
  server.on('error', () => {})

  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address()

  let closed = null
  return {
    host: '127.0.0.1',
    port,
    url: (scheme = 'https') => `${scheme}://127.0.0.1:${port}`,
    counts,
    close() {
      if (!closed) {
        closed = new Promise((resolve) => server.close(() => resolve()))
        for (const s of sockets) s.destroy()
      }
      return closed
    },
  }
}

module.exports = { makeCerts, startTlsProxy }
