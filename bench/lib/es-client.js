// The official Elasticsearch client, configured for the local search server.
// Client 8.x always sends `application/vnd.elasticsearch+json; compatible-with=8` (vendored
// headers); osmem answers those with 406. Without vendored headers the transport falls back to
// plain `application/json` / `application/x-ndjson`, which every Elasticsearch version accepts.
'use strict'

const { Client, Transport } = require('@elastic/elasticsearch')

class PlainJsonTransport extends Transport {
  constructor(opts) {
    super({ ...opts, vendoredHeaders: undefined })
  }
}

function makeClient(node) {
  return new Client({ node, Transport: PlainJsonTransport, requestTimeout: 60000, maxRetries: 3 })
}

module.exports = { makeClient }
