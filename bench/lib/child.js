// The child side of the IPC protocol in proc.js, shared by the tool runners in tools/.
'use strict'

const config = JSON.parse(process.argv[2] || '{}')

function send(type, data = {}) {
  if (process.connected) process.send({ type, ...data })
}

function fail(e) {
  const message = e && e.stack ? e.stack : String(e)
  process.stderr.write(`${message}\n`)
  send('error', { message: (e && e.message) || String(e) })
  // Give the message a moment to leave, then go.
  setTimeout(() => process.exit(1), 200).unref()
}

process.on('uncaughtException', fail)
process.on('unhandledRejection', fail)
// Parent gone (crash, Ctrl-C): never outlive it.
process.on('disconnect', () => process.exit(1))

let stopHandler = async () => {}
process.on('message', (m) => {
  if (m && m.type === 'stop') {
    Promise.resolve()
      .then(() => stopHandler())
      .then(
        () => process.exit(0),
        (e) => {
          process.stderr.write(`stop failed: ${e && e.stack}\n`)
          process.exit(1)
        },
      )
  }
})

/** Tells the parent modules are loaded; resolves when it says go (it samples /proc in between). */
function loaded() {
  return new Promise((resolve) => {
    const onGo = (m) => {
      if (m && m.type === 'go') {
        process.removeListener('message', onGo)
        resolve()
      }
    }
    process.on('message', onGo)
    send('loaded')
  })
}

/** What to do on the parent's 'stop' (then the process exits). */
function onStop(fn) {
  stopHandler = fn
}

module.exports = { config, send, fail, loaded, onStop }
