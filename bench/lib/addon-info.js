// Which addon binary the engine runs: the figures of a debug build say little about a release
// one, so the report states it. The release profile strips symbols (Cargo.toml), so a binary
// carrying `.debug_info` was not made by `npm run build`.
'use strict'

const fs = require('node:fs')
const path = require('node:path')

function elfSectionNames(file) {
  const fd = fs.openSync(file, 'r')
  try {
    const h = Buffer.alloc(64)
    fs.readSync(fd, h, 0, 64, 0)
    if (h.toString('latin1', 1, 4) !== 'ELF' || h[4] !== 2) return null // 64-bit ELF only
    const shoff = Number(h.readBigUInt64LE(0x28))
    const shentsize = h.readUInt16LE(0x3a)
    const shnum = h.readUInt16LE(0x3c)
    const shstrndx = h.readUInt16LE(0x3e)
    const table = Buffer.alloc(shentsize * shnum)
    fs.readSync(fd, table, 0, table.length, shoff)
    const strOff = Number(table.readBigUInt64LE(shstrndx * shentsize + 0x18))
    const strSize = Number(table.readBigUInt64LE(shstrndx * shentsize + 0x20))
    const strtab = Buffer.alloc(strSize)
    fs.readSync(fd, strtab, 0, strSize, strOff)
    const names = []
    for (let i = 0; i < shnum; i++) {
      const nameOff = table.readUInt32LE(i * shentsize)
      names.push(strtab.toString('latin1', nameOff, strtab.indexOf(0, nameOff)))
    }
    return names
  } finally {
    fs.closeSync(fd)
  }
}

function addonInfo(repoRoot) {
  const files = fs.readdirSync(repoRoot).filter((f) => f.endsWith('.node'))
  if (!files.length) return { file: null }
  const file = path.join(repoRoot, files[0])
  const st = fs.statSync(file)
  let sections = null
  try {
    sections = elfSectionNames(file)
  } catch {
    // not ELF (macOS/Windows): unknown
  }
  const debugInfo = sections ? sections.includes('.debug_info') : null
  return {
    file: path.basename(file),
    sizeMb: Math.round((st.size / 1048576) * 10) / 10,
    builtAt: st.mtime.toISOString(),
    debugInfo,
    build: debugInfo === null ? 'unknown' : debugInfo ? 'debug (has debug info: not the release profile)' : 'release',
  }
}

module.exports = { addonInfo }
