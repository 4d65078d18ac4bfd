// The status page: reads the snapshot stream (/events, server-sent events read with fetch so that
// a bearer token can be sent), or polls /stats when the stream is refused, and renders it.
'use strict'

const HISTORY = 300 // points kept for the charts (5 minutes at one a second)
const COLORS = ['#2563eb', '#15803d', '#b54708', '#7c3aed', '#0e7490', '#be185d', '#4d7c0f', '#9f1239']
const TOKEN_KEY = 'mongo-elastic-sync-token'

const $ = (id) => document.getElementById(id)
const history = [] // { t, throughput, lags: { ns: seconds } }
let previous = null // the last snapshot, for rates

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY)
  return token ? { authorization: `Bearer ${token}` } : {}
}

const number = (n) => (n == null ? '–' : Math.round(n).toLocaleString('en-US'))

function duration(ms) {
  if (ms == null) return '–'
  const s = ms / 1000
  if (s < 10) return `${s.toFixed(1)} s`
  if (s < 120) return `${Math.round(s)} s`
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`
}

function bytes(n) {
  if (n == null) return '–'
  const units = ['B', 'KiB', 'MiB', 'GiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`
}

const ago = (at, now) => (at == null ? '–' : `${duration(Math.max(0, now - at))} ago`)
const clock = (at) => new Date(at).toLocaleTimeString('en-GB')

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v
    else node.setAttribute(k, v)
  }
  for (const child of children) node.append(child)
  return node
}

function renderHeader(s) {
  $('name').textContent = s.name
  $('state').textContent = s.state
  $('state').dataset.state = s.state
  // A partitioned member: how many collections it owns (listed on hover), and its term.
  const owned = s.ownedCollections
  $('role').textContent = owned ? `${s.role} · owns ${owned.length}` : s.role
  $('role').title = s.term == null ? 'role of this instance' : `term ${s.term}${owned ? `: ${owned.join(', ') || 'no collection'}` : ''}`
  $('server').textContent = s.server ? `→ ${s.server}` : ''
  document.title = `${s.state} · ${s.name} · mongo-elastic-sync`
  $('failure').hidden = !s.error
  if (s.error) {
    $('failure-code').textContent = s.error.code
    $('failure-message').textContent = s.error.message
  }
}

function renderTotals(s) {
  const t = s.totals
  $('total-copied').textContent = number(t.copied)
  $('total-streamed').textContent = number(t.streamed)
  $('total-indexed').textContent = number(t.indexed)
  $('total-deleted').textContent = number(t.deleted)
  $('total-dead-letters').textContent = number(t.deadLetters)
  $('total-retries').textContent = number(t.retries)
  $('rss').textContent = bytes(s.process.rssBytes)
  if (previous && s.process.cpuSeconds != null && previous.process.cpuSeconds != null && s.now > previous.now) {
    const share = (100 * (s.process.cpuSeconds - previous.process.cpuSeconds) * 1000) / (s.now - previous.now)
    $('cpu').textContent = `${share.toFixed(0)} %`
  }
}

/** A bar with the copied share and, beside it, "copied / total (n %)". */
function progress(c) {
  const copying = c.phase === 'copying'
  const known = c.totalEstimate > 0
  const share = known ? Math.min(1, c.copied / c.totalEstimate) : copying ? 0 : 1
  const bar = el('div', {
    class: 'bar',
    role: 'progressbar',
    'aria-valuemin': '0',
    'aria-valuemax': String(c.totalEstimate),
    'aria-valuenow': String(c.copied),
    'data-done': String(!copying && c.phase !== 'starting'),
  })
  const fill = el('div', { class: 'fill' })
  fill.style.width = `${(share * 100).toFixed(1)}%`
  bar.append(fill)
  const text = known ? `${number(c.copied)} / ${number(c.totalEstimate)} (${Math.floor(share * 100)} %)` : number(c.copied)
  return el('div', { class: 'progress-cell' }, bar, el('span', { class: 'progress-text' }, text))
}

function renderCollections(s) {
  const body = $('collections').querySelector('tbody')
  const rows = Object.entries(s.collections).map(([ns, c]) =>
    el(
      'tr',
      { 'data-namespace': ns },
      el('td', {}, ns, ' → ', el('span', { class: 'index' }, c.index)),
      el('td', { class: 'phase', 'data-phase': c.phase }, c.phase),
      el('td', { class: 'progress' }, progress(c)),
      el('td', { class: 'rate' }, c.rate == null ? '–' : `${number(c.rate)}/s`),
      el('td', { class: 'eta' }, c.etaSeconds == null ? '–' : duration(c.etaSeconds * 1000)),
      el('td', { class: 'streamed' }, number(c.streamed)),
      el('td', { class: 'lag' }, duration(c.lagMs)),
      el('td', { class: 'last-change' }, ago(c.lastChangeAt, s.now)),
      el('td', { class: 'checkpoint' }, c.checkpointAgeMs == null ? '–' : `${duration(c.checkpointAgeMs)} ago`),
      el('td', { class: 'in-flight' }, c.inFlightBatches ? `${c.inFlightBatches} (${bytes(c.inFlightBytes)})` : '–'),
      el('td', { class: 'dead-letters' }, number(c.deadLetters)),
    ),
  )
  body.replaceChildren(...rows)
}

function renderList(list, entries, entry) {
  const items = entries.length ? [...entries].reverse().map(entry) : [el('li', { class: 'none' }, 'none')]
  list.replaceChildren(...items)
}

function renderRecent(s) {
  const r = s.recent
  $('dead-letters-seen').textContent = r.deadLettersSeen > r.deadLetters.length ? `(latest ${r.deadLetters.length} of ${number(r.deadLettersSeen)})` : ''
  $('warnings-seen').textContent = r.warningsSeen > r.warnings.length ? `(latest ${r.warnings.length} of ${number(r.warningsSeen)})` : ''
  renderList($('dead-letters'), r.deadLetters, (d) =>
    el('li', { class: 'dead-letter' }, el('span', { class: 'when' }, clock(d.at)), el('span', { class: 'kind', 'data-kind': 'dead' }, `${d.namespace} ${d.id}`), d.reason),
  )
  renderList($('warnings'), r.warnings, (w) =>
    el('li', { class: 'warning' }, el('span', { class: 'when' }, clock(w.at)), el('span', { class: 'kind', 'data-kind': w.kind }, w.kind), w.namespace ? `${w.namespace}: ` : '', w.message),
  )
}

/** Documents per second since the previous snapshot, and each collection's lag. */
function record(s) {
  const done = (x) => x.totals.copied + x.totals.streamed
  const throughput = previous && s.now > previous.now ? Math.max(0, ((done(s) - done(previous)) * 1000) / (s.now - previous.now)) : 0
  const lags = {}
  for (const [ns, c] of Object.entries(s.collections)) if (c.lagMs != null) lags[ns] = c.lagMs / 1000
  history.push({ t: s.now, throughput, lags })
  if (history.length > HISTORY) history.shift()
  $('throughput-now').textContent = `now ${number(throughput)}/s`
  const worst = Object.values(lags)
  $('lag-now').textContent = worst.length ? `now ${Math.max(...worst).toFixed(1)} s (worst collection)` : 'no change applied yet'
}

/** Lines over the history: `series` maps a name to a function of a point (null: no value). */
function chart(canvas, series) {
  const ratio = window.devicePixelRatio || 1
  const width = canvas.clientWidth || canvas.width
  const height = canvas.clientHeight || canvas.height
  canvas.width = width * ratio
  canvas.height = height * ratio
  const g = canvas.getContext('2d')
  g.scale(ratio, ratio)
  g.clearRect(0, 0, width, height)
  const values = history.flatMap((p) => Object.values(series).map((f) => f(p))).filter((v) => v != null)
  const max = Math.max(1e-9, ...values) * 1.1
  const left = 44
  // The last minute at first, growing to the whole history.
  const span = Math.min(HISTORY, Math.max(60, history.length))
  const x = (i) => left + ((width - left - 6) * i) / (span - 1)
  const y = (v) => height - 16 - ((height - 26) * v) / max
  g.font = '11px system-ui, sans-serif'
  g.fillStyle = '#667085'
  g.strokeStyle = '#e4e7ec'
  for (const v of [0, max / 2, max]) {
    g.beginPath()
    g.moveTo(left, y(v))
    g.lineTo(width - 4, y(v))
    g.stroke()
    g.fillText(v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1), 2, y(v) + 4)
  }
  const offset = span - history.length
  if (!Object.keys(series).length) {
    g.fillText('no data yet', left + 8, height / 2)
    return
  }
  Object.entries(series).forEach(([name, f], n) => {
    g.strokeStyle = COLORS[n % COLORS.length]
    g.lineWidth = 1.5
    g.beginPath()
    let drawing = false
    history.forEach((p, i) => {
      const v = f(p)
      if (v == null) return (drawing = false)
      if (drawing) g.lineTo(x(offset + i), y(v))
      else g.moveTo(x(offset + i), y(v))
      drawing = true
    })
    g.stroke()
    if (Object.keys(series).length > 1) {
      g.fillStyle = COLORS[n % COLORS.length]
      g.fillText(name, left + 6, 12 + 12 * n)
    }
  })
}

function render(s) {
  renderHeader(s)
  renderTotals(s)
  renderCollections(s)
  renderRecent(s)
  record(s)
  chart($('throughput-chart'), { 'documents/s': (p) => p.throughput })
  const names = [...new Set(history.flatMap((p) => Object.keys(p.lags)))].slice(0, COLORS.length)
  chart($('lag-chart'), Object.fromEntries(names.map((ns) => [ns, (p) => p.lags[ns] ?? null])))
  $('updated').textContent = `updated ${clock(s.now)}`
  previous = s
}

function needToken() {
  $('login').hidden = false
  $('updated').textContent = 'a token is needed'
}

/** Reads server-sent events from `response` and renders each snapshot; resolves when it ends. */
async function readStream(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += value
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const data = frame
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n')
      if (data) render(JSON.parse(data))
    }
  }
}

async function poll() {
  for (;;) {
    const response = await fetch('stats', { headers: headers() }).catch(() => null)
    if (response && response.status === 401) return needToken()
    if (response && response.ok) render(await response.json())
    else $('updated').textContent = 'server unreachable, retrying…'
    await new Promise((r) => setTimeout(r, 2000))
  }
}

async function connect() {
  let delay = 1000
  for (;;) {
    const response = await fetch('events', { headers: { ...headers(), accept: 'text/event-stream' } }).catch(() => null)
    if (response && response.status === 401) return needToken()
    if (response && response.status === 503) return poll()
    if (response && response.ok) {
      delay = 1000
      await readStream(response).catch(() => {})
    }
    $('updated').textContent = 'disconnected, reconnecting…'
    await new Promise((r) => setTimeout(r, delay))
    delay = Math.min(delay * 2, 15000)
  }
}

/** With a configStore: the stored definitions, their instances, and start/stop buttons (token needed). */
async function definitions() {
  const response = await fetch('definitions', { headers: headers() }).catch(() => null)
  if (!response || !response.ok) return
  const { definitions: list } = await response.json()
  $('definitions-section').hidden = false
  const rows = list.map((d) => {
    const instances = d.instances.map((i) => `${i.host}:${i.pid} ${i.state} v${i.version}`).join(', ') || 'none'
    const action = d.desired === 'running' ? 'stop' : 'start'
    const button = el('button', { type: 'button' }, action)
    button.addEventListener('click', async () => {
      const done = await fetch(`definitions/${encodeURIComponent(d.name)}/${action}`, { method: 'POST', headers: headers() }).catch(() => null)
      button.textContent = done && done.ok ? `${action} asked` : `refused (${done ? done.status : 'unreachable'})`
    })
    const cells = [d.name, `v${d.version}`, d.appliedVersion == null ? '–' : `v${d.appliedVersion}`, d.desired, d.collections.join(', '), instances]
    return el('tr', {}, ...cells.map((c) => el('td', {}, c)), el('td', {}, button))
  })
  $('definitions').querySelector('tbody').replaceChildren(...rows)
}

setInterval(() => definitions().catch(() => {}), 5000)
definitions().catch(() => {})

$('login').addEventListener('submit', (e) => {
  e.preventDefault()
  sessionStorage.setItem(TOKEN_KEY, $('token').value)
  $('login').hidden = true
  connect()
})

connect()
