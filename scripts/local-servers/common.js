// What every part of the local servers shares: where they live, the address they bind, logging.
'use strict'

const path = require('node:path')

const ROOT = path.resolve(__dirname, '..', '..')
const LOCAL = path.join(ROOT, '.local')

module.exports = {
  ROOT,
  LOCAL,
  RUN_ROOT: path.join(LOCAL, 'run'), // one directory per started pair of servers
  SERVERS_JSON: path.join(LOCAL, 'servers.json'), // what `local-servers.js start` started
  HOST: '127.0.0.1', // the only address the servers ever bind
  REPLICA_SET: 'secantus',
  log: (msg) => process.stderr.write(`[local-servers] ${msg}\n`),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
}
