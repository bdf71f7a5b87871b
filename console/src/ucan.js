// UCAN 1.0 invocations signed in the browser, byte for byte as the node's `zero-auth` encodes
// them: a DAG-CBOR envelope `[signature, {"h": varsig header, "ucan/inv@1.0.0": payload}]`,
// Ed25519 over the DAG-CBOR of the signed map, the issuer a did:key. The private key is a
// WebCrypto CryptoKey that is never extractable: the page can sign with it, and nothing (this
// code included) can read it back.
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { base58btc } from 'multiformats/bases/base58'
import { sha256 } from 'multiformats/hashes/sha2'

/** The varsig header of Ed25519 over DAG-CBOR (zero-auth's `VARSIG_ED25519_DAG_CBOR`). */
export const VARSIG_ED25519_DAG_CBOR = new Uint8Array([0x34, 0x01, 0xed, 0x01, 0xed, 0x01, 0x13, 0x71])
const INVOCATION_TAG = 'ucan/inv@1.0.0'
const DELEGATION_TAG = 'ucan/dlg@1.0.0'
/** PKCS#8 DER prefix of an Ed25519 private key (RFC 8410), followed by the 32-byte seed. */
const PKCS8_PREFIX = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20])
/** How long an invocation the console signs is valid (the node caps it by its own setting). */
export const INVOCATION_LIFETIME_SECS = 120

export function base64Decode(text) {
  const clean = text.trim()
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean)) throw new Error('not standard base64')
  const bin = atob(clean)
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

export function base64Encode(bytes) {
  let bin = ''
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(bin)
}

/** The lines of a key or chain file that carry data (not blank, not `#` comments). */
function dataLines(text) {
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
}

/**
 * Reads a private key as `zero` writes it (`*.key`: `#` comment lines, then the standard
 * base64 of the 32-byte Ed25519 seed), or the multicodec form of the UCAN fixtures (base64 of
 * `0x80 0x26` + seed). Returns `{key, did}`: a non-extractable signing key and its did:key.
 */
export async function importKey(text) {
  const lines = dataLines(text)
  if (lines.length !== 1) {
    throw new Error('a key file holds exactly one non-comment line (the base64 of the 32-byte seed); pick the .key file, not the .ucan chain')
  }
  let raw
  try {
    raw = base64Decode(lines[0])
  } catch {
    throw new Error('the key line is not valid base64')
  }
  let seed
  if (raw.length === 32) seed = raw
  else if (raw.length === 34 && raw[0] === 0x80 && raw[1] === 0x26) seed = raw.subarray(2)
  else throw new Error(`the key is ${raw.length} bytes long; an Ed25519 seed is 32 bytes`)
  const pkcs8 = new Uint8Array(PKCS8_PREFIX.length + 32)
  pkcs8.set(PKCS8_PREFIX)
  pkcs8.set(seed, PKCS8_PREFIX.length)
  // Imported once extractable, only to learn the public key (JWK `x`), then again for good.
  const probe = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, true, ['sign'])
  const jwk = await crypto.subtle.exportKey('jwk', probe)
  const key = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, false, ['sign'])
  pkcs8.fill(0)
  raw.fill(0)
  const pub = base64Decode(jwk.x.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (jwk.x.length % 4)) % 4))
  return { key, did: didKey(pub) }
}

/** The did:key of an Ed25519 public key (multicodec `0xed 0x01`, base58btc). */
export function didKey(publicKey) {
  const bytes = new Uint8Array(2 + publicKey.length)
  bytes.set([0xed, 0x01])
  bytes.set(publicKey, 2)
  return 'did:key:' + base58btc.encode(bytes)
}

/** The CIDv1 (DAG-CBOR, SHA2-256) of token bytes, as zero-auth's `cid_of`. */
export async function cidOf(bytes) {
  return CID.create(1, dagCbor.code, await sha256.digest(bytes))
}

/**
 * Reads a chain file (`*.ucan`: one standard-base64 DAG-CBOR delegation per line, root first,
 * `#` comments). Returns `[{base64, cid, payload}]`; empty text is an empty chain (the Admin's).
 */
export async function parseChain(text) {
  const chain = []
  for (const [i, line] of dataLines(text).entries()) {
    let bytes
    try {
      bytes = base64Decode(line)
    } catch {
      throw new Error(`chain line ${i + 1} is not base64; pick the .ucan chain file`)
    }
    let env
    try {
      env = dagCbor.decode(bytes)
    } catch (e) {
      throw new Error(`chain line ${i + 1} is not DAG-CBOR: ${e.message}`)
    }
    const payload = Array.isArray(env) && env.length === 2 && env[1] && env[1][DELEGATION_TAG]
    if (!payload) throw new Error(`chain line ${i + 1} is not a UCAN 1.0 delegation`)
    chain.push({ base64: base64Encode(bytes), cid: await cidOf(bytes), payload })
  }
  return chain
}

/** The tenant a chain is scoped to (its root's `["==", ".tenant", NAME]` statement), if any. */
export function chainTenant(chain) {
  for (const d of chain) {
    for (const st of d.payload.pol || []) {
      if (Array.isArray(st) && st[0] === '==' && st[1] === '.tenant' && typeof st[2] === 'string') return st[2]
    }
  }
  return null
}

/** 12 random bytes, as zero-auth's builder makes. */
function nonce() {
  return crypto.getRandomValues(new Uint8Array(12))
}

/**
 * Signs an invocation of `cmd` with `args` (plain JS: strings, numbers, arrays, objects) for
 * the node `aud`, citing `chain`, and returns its envelope in base64. The subject is the
 * chain root's `sub`, or the signer itself when the chain is empty (the Admin).
 */
export async function signInvocation({ key, did, chain, aud, cmd, args, now = Math.floor(Date.now() / 1000) }) {
  let sub = did
  if (chain.length > 0) {
    sub = chain[0].payload.sub
    if (typeof sub !== 'string') throw new Error("the proof chain's root has no subject")
  }
  const payload = {
    iss: did,
    sub,
    aud,
    cmd,
    args,
    prf: chain.map((d) => d.cid),
    nonce: nonce(),
    exp: now + INVOCATION_LIFETIME_SECS,
  }
  const signed = { h: VARSIG_ED25519_DAG_CBOR, [INVOCATION_TAG]: payload }
  const input = dagCbor.encode(signed)
  const signature = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, key, input))
  return base64Encode(dagCbor.encode([signature, signed]))
}
