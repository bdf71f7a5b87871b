// The content hash of a component as the node computes it (zero-component's `content_hash`):
// SHA-256 of the binary without its top-level custom sections named `ucan`.

const UCAN_SECTION = 'ucan'

function readVarU32(bytes, pos) {
  let result = 0
  let shift = 0
  for (let i = 0; i < 5; i++) {
    if (pos >= bytes.length) throw new Error('the file ends inside a section header; is it a WebAssembly component?')
    const b = bytes[pos++]
    result |= (b & 0x7f) << shift
    if ((b & 0x80) === 0) return [result >>> 0, pos]
    shift += 7
  }
  throw new Error('a section size is not a valid LEB128 number')
}

/** The byte ranges `[start, end)` of the top-level `ucan` custom sections. */
export function ucanSections(bytes) {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    throw new Error('not a WebAssembly file (no \\0asm header); pick the NAME.zero.wasm that `zero build` or `zero sign` wrote')
  }
  const out = []
  let pos = 8
  while (pos < bytes.length) {
    const start = pos
    const id = bytes[pos++]
    let size
    ;[size, pos] = readVarU32(bytes, pos)
    const end = pos + size
    if (end > bytes.length) throw new Error(`the section at offset ${start} claims ${size} bytes but the file ends at ${bytes.length}`)
    if (id === 0) {
      let nameLen
      let p = pos
      ;[nameLen, p] = readVarU32(bytes, p)
      if (p + nameLen > end) throw new Error(`the custom section at offset ${start} has a name longer than itself`)
      const name = new TextDecoder().decode(bytes.subarray(p, p + nameLen))
      if (name === UCAN_SECTION) out.push([start, end])
    }
    pos = end
  }
  return out
}

/** `sha256:HEX` of the component without its `ucan` sections. */
export async function contentHash(bytes) {
  const parts = []
  let pos = 0
  for (const [start, end] of ucanSections(bytes)) {
    parts.push(bytes.subarray(pos, start))
    pos = end
  }
  parts.push(bytes.subarray(pos))
  const total = parts.reduce((n, p) => n + p.length, 0)
  const joined = new Uint8Array(total)
  let at = 0
  for (const p of parts) {
    joined.set(p, at)
    at += p.length
  }
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', joined))
  return 'sha256:' + Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('')
}
