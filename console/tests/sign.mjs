// Signs one invocation with the console's own code (src/ucan.js) under Node, for the Rust test
// `e2e_console` to decode and verify with zero-auth: the encoding, byte for byte, without a
// browser. Environment: KEY_FILE, CHAIN_FILE (may be empty), AUD, CMD, ARGS (JSON object).
// Prints `{"invocation": BASE64, "did": DID, "proofs": [CID…], "tenant": NAME|null}`.
import { readFileSync } from 'node:fs'
import { chainTenant, importKey, parseChain, signInvocation } from '../src/ucan.js'

const { key, did } = await importKey(readFileSync(process.env.KEY_FILE, 'utf8'))
const chain = await parseChain(process.env.CHAIN_FILE ? readFileSync(process.env.CHAIN_FILE, 'utf8') : '')
const invocation = await signInvocation({
  key,
  did,
  chain,
  aud: process.env.AUD,
  cmd: process.env.CMD,
  args: JSON.parse(process.env.ARGS || '{}'),
})
console.log(JSON.stringify({ invocation, did, proofs: chain.map((d) => d.cid.toString()), tenant: chainTenant(chain) }))
