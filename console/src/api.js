// The management API as the console calls it: every call carries a fresh invocation signed in
// this page (`Authorization: Bearer …`) and the proof chain (`ucan-proofs`), like the `zero`
// CLI. Nothing else identifies the caller: no cookie, no session on the node.
import { signInvocation } from './ucan.js'

/** A refusal of the node: its status, the failed check and its explanation. */
export class ApiError extends Error {
  constructor(status, error, message) {
    super(`${error}: ${message} (${status})`)
    this.status = status
    this.error = error
  }
}

/** What `GET /v1/node` says (no invocation needed): the node's DID and its Admin. */
export async function nodeInfo() {
  const r = await fetch('/v1/node', { credentials: 'omit', cache: 'no-store' })
  if (!r.ok) throw new ApiError(r.status, 'Unreachable', 'the node did not describe itself')
  return r.json()
}

async function refusal(r) {
  let body = {}
  try {
    body = await r.json()
  } catch {
    // not JSON: reported by status alone
  }
  return new ApiError(r.status, body.error || 'Error', body.message || r.statusText)
}

function segment(s) {
  return encodeURIComponent(s)
}

/** A signed-in caller: key, DID, proof chain, and the node it talks to. */
export class Session {
  constructor({ key, did, chain, node }) {
    this.key = key
    this.did = did
    this.chain = chain
    this.node = node
  }

  get isAdmin() {
    return this.chain.length === 0 && this.did === this.node.admin
  }

  async headers(cmd, args) {
    const inv = await signInvocation({ key: this.key, did: this.did, chain: this.chain, aud: this.node.did, cmd, args })
    const h = { authorization: `Bearer ${inv}` }
    if (this.chain.length > 0) h['ucan-proofs'] = this.chain.map((d) => d.base64).join(',')
    return h
  }

  async raw(method, path, cmd, args, { body, contentType, signal } = {}) {
    const headers = await this.headers(cmd, args)
    if (contentType) headers['content-type'] = contentType
    const r = await fetch(path, { method, headers, body, signal, credentials: 'omit', cache: 'no-store' })
    if (!r.ok) throw await refusal(r)
    return r
  }

  async call(method, path, cmd, args, opts) {
    return (await this.raw(method, path, cmd, args, opts)).json()
  }

  listTenants() {
    return this.call('GET', '/v1/tenants', '/tenant/list', {})
  }

  listApps(tenant) {
    return this.call('GET', `/v1/tenants/${segment(tenant)}/apps`, '/app/list', { tenant })
  }

  deploy(tenant, app, routes, hash, bytes) {
    const args = { tenant, app, routes, allowed_outbound_hosts: [], component: hash }
    return this.call('PUT', `/v1/tenants/${segment(tenant)}/apps/${segment(app)}`, '/app/deploy', args, {
      body: bytes,
      contentType: 'application/wasm',
    })
  }

  remove(tenant, app) {
    return this.call('DELETE', `/v1/tenants/${segment(tenant)}/apps/${segment(app)}`, '/app/remove', { tenant, app })
  }

  /** The names of the tenant's databases (`/db/list`). */
  listDatabases(tenant) {
    return this.call('GET', `/v1/tenants/${segment(tenant)}/db`, '/db/list', { tenant })
  }

  /** Runs one statement on a database (`/db/query`); the console sends SELECTs only. */
  query(tenant, db, sql) {
    return this.call('POST', `/v1/tenants/${segment(tenant)}/db/${segment(db)}/query`, '/db/query', { tenant, db, sql }, {
      body: JSON.stringify({ sql, params: [] }),
      contentType: 'application/json',
    })
  }

  /** Lists a directory of the tenant's files (`/fs/read` with `?list`). */
  listFiles(tenant, path) {
    const segs = path.split('/').filter(Boolean).map(segment)
    const url = segs.length ? `/v1/tenants/${segment(tenant)}/fs/${segs.join('/')}?list` : `/v1/tenants/${segment(tenant)}/fs?list`
    return this.call('GET', url, '/fs/read', { tenant, path: '/' + path.split('/').filter(Boolean).join('/') })
  }

  /**
   * Follows the tenant's log stream (`/log/read`, `?follow`): recent lines, then each new one,
   * to `onLine(object)` until `signal` aborts or the stream ends (then it resolves).
   */
  async follow(tenant, onLine, signal) {
    const r = await this.raw('GET', `/v1/tenants/${segment(tenant)}/logs?follow`, '/log/read', { tenant }, { signal })
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader()
    let buffered = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) return
      buffered += value
      let nl
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim()
        buffered = buffered.slice(nl + 1)
        if (!line) continue
        try {
          onLine(JSON.parse(line))
        } catch {
          // a line that is not JSON is not ours to show
        }
      }
    }
  }
}
