// Child processes for tool runs, and what /proc says about them (RSS, CPU seconds).
// Each tool runs alone in its own process so its memory and CPU are its own.
'use strict'

const fs = require('node:fs')
const { fork, execFileSync } = require('node:child_process')

let clkTck = 100
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
} catch {
  // 100 on every Linux we know of
}

/** CPU seconds (user + system, all threads) and memory of a live process, or null if gone. */
function sample(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const cpuSec = (Number(f[11]) + Number(f[12])) / clkTck
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = (key) => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)
      return m ? Number(m[1]) : 0
    }
    return { cpuSec, rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0) }
  } catch {
    return null
  }
}

const live = new Set()

/** SIGKILL every child still running (from exit and signal handlers: synchronous). */
function killAll() {
  for (const c of live) {
    try {
      c.kill('SIGKILL')
    } catch {
      // already gone
    }
  }
  live.clear()
}

/**
 * A tool in a child process, speaking a small IPC protocol:
 *   child → { type: 'loaded' }            modules loaded; waits for { type: 'go' }
 *   child → { type: 'copied', ... }        copy finished (copy mode)
 *   child → { type: 'streaming', ... }     ready for changes (stream mode)
 *   child → { type: 'error', message }     failed
 *   parent → { type: 'stop' }              stop the tool and exit
 * Memory and CPU are sampled every 100 ms; `mark(name)` snapshots them at a point in time.
 */
class ToolProcess {
  constructor(script, config, { label, log = () => {} } = {}) {
    this.label = label || script
    this.log = log
    this.messages = []
    this.waiters = []
    this.stderrTail = []
    this.marks = {}
    this.peak = { rssKb: 0, hwmKb: 0 }
    this.child = fork(script, [JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: { ...process.env },
    })
    live.add(this.child)
    this.pid = this.child.pid
    const keepTail = (chunk) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line.trim()) continue
        this.stderrTail.push(line)
        if (this.stderrTail.length > 40) this.stderrTail.shift()
        if (process.env.BENCH_VERBOSE) this.log(`  [${this.label}] ${line}`)
      }
    }
    this.child.stdout.on('data', keepTail)
    this.child.stderr.on('data', keepTail)
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        live.delete(this.child)
        clearInterval(this.timer)
        this.exitInfo = { code, signal }
        this.deliver({ type: 'exit', code, signal })
        resolve(this.exitInfo)
      })
    })
    this.child.on('message', (m) => this.deliver(m))
    this.child.on('error', (e) => this.deliver({ type: 'error', message: e.message }))
    this.timer = setInterval(() => this.poll(), 100)
  }

  poll() {
    const s = sample(this.pid)
    if (!s) return s
    this.last = s
    this.peak.rssKb = Math.max(this.peak.rssKb, s.rssKb)
    this.peak.hwmKb = Math.max(this.peak.hwmKb, s.hwmKb)
    return s
  }

  /** Snapshot CPU and memory now, under `name`. */
  mark(name) {
    const s = this.poll() || this.last
    this.marks[name] = s ? { ...s, at: performance.now() } : null
    return this.marks[name]
  }

  deliver(m) {
    this.messages.push(m)
    for (const w of [...this.waiters]) {
      if (w.match(m)) {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        w.resolve(m)
      }
    }
  }

  /** The first message of `type` (already received or to come); rejects on error, exit or time-out. */
  waitFor(type, timeoutMs) {
    return this.waitFrom(0, type, timeoutMs)
  }

  /** The next message of `type`, received after this call (for replies to a request sent next). */
  waitForNext(type, timeoutMs) {
    return this.waitFrom(this.messages.length, type, timeoutMs)
  }

  /** The first message of `type` from the `from`-th received on. */
  waitFrom(from, type, timeoutMs) {
    const bad = (m) => m.type === 'error' || m.type === 'exit'
    const seen = this.messages.slice(from).find((m) => m.type === type || bad(m))
    const settle = (m) => {
      if (m.type === type) return m
      const why = m.type === 'error' ? m.message : `exited (code ${m.code}, signal ${m.signal})`
      throw new Error(`${this.label}: ${why} while waiting for '${type}'\n    ${this.stderrTail.slice(-15).join('\n    ')}`)
    }
    if (seen) return Promise.resolve(seen).then(settle)
    return new Promise((resolve, reject) => {
      const w = { match: (m) => m.type === type || bad(m), resolve }
      this.waiters.push(w)
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        reject(new Error(`${this.label}: no '${type}' within ${Math.round(timeoutMs / 1000)} s\n    ${this.stderrTail.slice(-15).join('\n    ')}`))
      }, timeoutMs)
      w.resolve = (m) => {
        clearTimeout(t)
        resolve(m)
      }
    }).then(settle)
  }

  send(m) {
    if (this.child.connected) this.child.send(m)
  }

  /** Ask the tool to stop; SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 15000) {
    if (this.exitInfo) return this.exitInfo
    this.send({ type: 'stop' })
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs)
    const info = await this.exited
    clearTimeout(t)
    return info
  }

  kill() {
    if (!this.exitInfo) this.child.kill('SIGKILL')
    return this.exited
  }
}

module.exports = { ToolProcess, sample, killAll, clkTck }
