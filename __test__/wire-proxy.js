// A loopback TCP proxy in front of the MongoDB server that records the commands clients send
// (the body of each OP_MSG), for tests that check what the engine asks the server for.
const net = require('node:net')
const { BSON } = require('mongodb')

const OP_MSG = 2013

/** Splits a byte stream into wire messages and calls `onMessage(opCode, body)` for each. */
function messageReader(onMessage) {
  let buffered = Buffer.alloc(0)
  return (chunk) => {
    buffered = Buffer.concat([buffered, chunk])
    while (buffered.length >= 16 && buffered.length >= buffered.readInt32LE(0)) {
      const length = buffered.readInt32LE(0)
      onMessage(buffered.readInt32LE(12), buffered.subarray(16, length))
      buffered = buffered.subarray(length)
    }
  }
}

/** The command document of an OP_MSG body (its kind-0 section), or null. */
function commandOf(body) {
  // flagBits (4 bytes), then sections: kind 0 is one BSON document.
  let at = 4
  while (at < body.length) {
    const kind = body[at]
    if (kind === 0) {
      const size = body.readInt32LE(at + 1)
      return BSON.deserialize(body.subarray(at + 1, at + 1 + size), { promoteLongs: false })
    }
    at += 1 + body.readInt32LE(at + 1) // kind 1: a sized document sequence
  }
  return null
}

/** Starts a proxy to `host:port`; `commands` collects every command sent through it. */
async function startWireProxy(host, port) {
  const commands = []
  const sockets = new Set()
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host)
    sockets.add(client).add(upstream)
    const read = messageReader((opCode, body) => {
      if (opCode === OP_MSG) {
        const command = commandOf(body)
        if (command) commands.push(command)
      }
    })
    client.on('data', (chunk) => {
      read(chunk)
      upstream.write(chunk)
    })
    upstream.on('data', (chunk) => client.write(chunk))
    const close = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', close).on('close', close)
    upstream.on('error', close).on('close', close)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: server.address().port,
    commands,
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

module.exports = { startWireProxy }
