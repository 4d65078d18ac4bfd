// Headless Chromium for end-to-end tests of pages, driven by playwright-core (which downloads no
// browser of its own). Here that is Debian's `chromium` package, installed by the test setup when
// /usr/bin/chromium is missing (so a fresh machine of this kind gets it); elsewhere (CI runners,
// macOS, Alpine) an installed Chrome or Chromium, or CHROMIUM_PATH, or Alpine's package.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const CANDIDATES = [
  process.env.CHROMIUM_PATH,
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome',
  '/usr/bin/google-chrome-stable',
  '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome',
  '/Applications/Chromium.app/Contents/MacOS/Chromium',
]
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

const findChromium = () => CANDIDATES.find((p) => p && fs.existsSync(p))
const has = (command) => ['/usr/bin', '/bin', '/sbin', '/usr/sbin'].some((dir) => fs.existsSync(path.join(dir, command)))

/** Installs the distribution's Chromium: Debian's with apt-get, Alpine's with apk (root only). */
function installChromium() {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return false
  const run = (command, ...args) =>
    execFileSync(command, args, { stdio: 'pipe', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 15 * 60 * 1000 })
  if (has('apt-get')) {
    try {
      run('apt-get', 'install', '-y', 'chromium')
    } catch {
      run('apt-get', 'update') // a fresh machine may have no package lists yet
      run('apt-get', 'install', '-y', 'chromium')
    }
    return true
  }
  if (has('apk')) {
    run('apk', 'add', '--no-cache', 'chromium')
    return true
  }
  return false
}

/** The path of a Chromium, installing the distribution's package when there is none (root only). */
function ensureChromium() {
  const found = findChromium() ?? (installChromium() ? findChromium() : undefined)
  if (!found) throw new Error(`no Chromium found (${CANDIDATES.filter(Boolean).join(', ')}): install one as root ('apt-get install -y chromium'), or set CHROMIUM_PATH`)
  return found
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
