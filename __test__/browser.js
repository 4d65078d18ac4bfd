// Headless Chromium for end-to-end tests of pages: Debian's `chromium` package, installed here
// when /usr/bin/chromium is missing (so a fresh machine of this kind gets it), driven by
// playwright-core (which downloads no browser of its own).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const CHROMIUM = '/usr/bin/chromium'
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

/** The path of Chromium, after installing Debian's package if it is missing (needs root). */
function ensureChromium() {
  if (fs.existsSync(CHROMIUM)) return CHROMIUM
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    throw new Error(`${CHROMIUM} is missing and cannot be installed from here (not root on Linux): run 'apt-get install -y chromium' as root`)
  }
  const apt = (...args) => execFileSync('apt-get', args, { stdio: 'pipe', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 15 * 60 * 1000 })
  try {
    apt('install', '-y', 'chromium')
  } catch {
    apt('update') // a fresh machine may have no package lists yet
    apt('install', '-y', 'chromium')
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`apt-get installed chromium but ${CHROMIUM} is not there`)
  return CHROMIUM
}

/** A browser with a fresh profile; `close()` ends it and removes the profile. */
async function launchBrowser({ width = 1360, height = 1000 } = {}) {
  const { chromium } = require('playwright-core')
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mes-chromium-'))
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: ensureChromium(),
    headless: true,
    args: ARGS,
    viewport: { width, height },
  })
  const page = context.pages()[0] ?? (await context.newPage())
  return {
    context,
    page,
    async close() {
      await context.close().catch(() => {})
      fs.rmSync(userDataDir, { recursive: true, force: true })
    },
  }
}

/** Where tests keep what a person would look at (screenshots); git-ignored. */
const ARTIFACTS = path.join(__dirname, 'artifacts')

function artifactPath(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  return path.join(ARTIFACTS, name)
}

module.exports = { ensureChromium, launchBrowser, artifactPath }
