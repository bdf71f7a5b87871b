// The zerocore web console. Everything it shows comes from the management API, called with
// invocations this page signs (see ucan.js); the key stays in this browser (see store.js).
import './style.css'
import { ApiError, Session, nodeInfo } from './api.js'
import { draw, Traffic } from './chart.js'
import * as store from './store.js'
import { chainTenant, importKey, parseChain } from './ucan.js'
import { contentHash } from './wasm.js'

const $ = (id) => document.getElementById(id)

/** An element with attributes and children (text is always text: log lines are untrusted). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'onclick') el.addEventListener('click', v)
    else if (k === 'dataset') Object.assign(el.dataset, v)
    else el.setAttribute(k, v)
  }
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')))
  return el
}

const MAX_REQUESTS = 50
const MAX_FAULTS = 20

const state = {
  session: null,
  tenant: null,
  traffic: new Traffic(),
  stream: null,
  timer: null,
}

function explain(e) {
  return e instanceof ApiError ? e.message : e && e.message ? e.message : String(e)
}

function say(text, kind = 'info') {
  const el = $('status')
  el.textContent = text
  el.className = `status ${kind}`
}

async function readFile(input) {
  const f = input.files && input.files[0]
  return f ? f.text() : null
}

// ---- sign in ----

async function signIn(keyText, chainText) {
  const { key, did } = await importKey(keyText)
  const chain = await parseChain(chainText)
  const node = await nodeInfo()
  if (chain.length > 0) {
    const leaf = chain[chain.length - 1].payload
    if (leaf.aud !== did) {
      throw new Error(`the chain is delegated to ${leaf.aud}, not to this key (${did}); pick the key the chain was given to`)
    }
  } else if (did !== node.admin) {
    throw new Error(`this key (${did}) is not the node's Admin (${node.admin}); add the proof chain (.ucan) the Admin gave you`)
  }
  await store.save({ key, did, chainText })
  return new Session({ key, did, chain, node })
}

async function restore() {
  const kept = await store.load()
  if (!kept) return null
  const chain = await parseChain(kept.chainText)
  return new Session({ key: kept.key, did: kept.did, chain, node: await nodeInfo() })
}

function showSignIn() {
  $('signin').hidden = false
  $('console').hidden = true
}

async function onSignIn(ev) {
  ev.preventDefault()
  $('signin-error').textContent = ''
  try {
    const keyText = (await readFile($('key-file'))) ?? $('key-text').value
    const chainText = (await readFile($('chain-file'))) ?? $('chain-text').value
    if (!keyText.trim()) throw new Error('give your key: pick its .key file or paste it')
    // The key's text is not kept in the page once read (only the non-extractable key is).
    $('signin-form').reset()
    enter(await signIn(keyText, chainText))
  } catch (e) {
    $('signin-error').textContent = explain(e)
  }
}

async function signOut() {
  stopStream()
  await store.clear()
  state.session = null
  state.tenant = null
  $('signin-form').reset()
  $('signin-error').textContent = ''
  for (const t of ['tenants', 'apps', 'requests', 'files']) $(t).querySelector('tbody').replaceChildren()
  for (const l of ['faults', 'databases', 'db-tables', 'db-rows']) $(l).replaceChildren()
  state.traffic = new Traffic()
  say('signed out: the key is no longer kept in this browser')
  showSignIn()
}

// ---- the console ----

function enter(session) {
  state.session = session
  $('signin').hidden = true
  $('console').hidden = false
  $('who').textContent = session.did
  $('role').textContent = session.isAdmin ? 'Admin' : 'Owner'
  $('node-did').textContent = session.node.did
  $('tenants-panel').hidden = !session.isAdmin
  say(`signed in as ${session.isAdmin ? 'the Admin' : session.did}`)
  const tenant = chainTenant(session.chain)
  if (session.isAdmin) {
    refreshTenants()
  } else if (tenant) {
    selectTenant(tenant)
  } else {
    say('the chain names no tenant; type one in the tenant field', 'error')
  }
}

async function refreshTenants() {
  try {
    const { tenants } = await state.session.listTenants()
    const body = $('tenants').querySelector('tbody')
    body.replaceChildren(
      ...tenants.map((t) =>
        h(
          'tr',
          { dataset: { tenant: t.tenant } },
          h('td', {}, h('button', { class: 'link', onclick: () => selectTenant(t.tenant) }, t.tenant)),
          h('td', { class: 'mono' }, t.owner),
          h('td', {}, (t.hosts || []).join(', ')),
          h('td', {}, t.apps),
        ),
      ),
    )
    if (!state.tenant && tenants.length > 0) selectTenant(tenants[0].tenant)
  } catch (e) {
    say(`listing tenants failed: ${explain(e)}`, 'error')
  }
}

function selectTenant(tenant) {
  state.tenant = tenant
  $('tenant').value = tenant
  $('tenant-name').textContent = tenant
  state.traffic = new Traffic()
  $('requests').querySelector('tbody').replaceChildren()
  $('faults').replaceChildren()
  refreshApps()
  listFiles('/')
  $('db-name').textContent = ''
  $('db-tables').replaceChildren()
  $('db-rows').replaceChildren()
  listDatabases()
  startStream()
}

async function refreshApps() {
  const tenant = state.tenant
  try {
    const { apps } = await state.session.listApps(tenant)
    $('apps').querySelector('tbody').replaceChildren(
      ...apps.map((a) =>
        h(
          'tr',
          { dataset: { app: a.app } },
          h('td', {}, a.app),
          h('td', {}, a.routes.join(', ')),
          h('td', { class: 'mono', title: a.component }, a.component.slice(0, 19) + '…'),
          h('td', {}, h('button', { class: 'danger', onclick: () => removeApp(a.app) }, 'Remove')),
        ),
      ),
    )
    $('apps').dataset.count = String(apps.length)
  } catch (e) {
    say(`listing the apps of ${tenant} failed: ${explain(e)}`, 'error')
  }
}

async function removeApp(app) {
  if (!window.confirm(`Remove app ${app} from ${state.tenant}? Its routes stop answering.`)) return
  try {
    await state.session.remove(state.tenant, app)
    say(`removed ${app}`)
  } catch (e) {
    say(`removing ${app} failed: ${explain(e)}`, 'error')
  }
  refreshApps()
}

function appNameOf(fileName) {
  return fileName.split('.')[0].replace(/_/g, '-')
}

async function onDeploy(ev) {
  ev.preventDefault()
  const file = $('deploy-file').files[0]
  const app = $('deploy-app').value.trim() || (file ? appNameOf(file.name) : '')
  const routes = $('deploy-routes').value.split(/[\s,]+/).filter(Boolean)
  try {
    if (!file) throw new Error('pick the signed component (NAME.zero.wasm) to deploy')
    if (!app) throw new Error('give the app a name')
    if (routes.length === 0) throw new Error('give at least one route, like /hello or host/path')
    say(`deploying ${app}…`)
    const bytes = new Uint8Array(await file.arrayBuffer())
    const hash = await contentHash(bytes)
    const r = await state.session.deploy(state.tenant, app, routes, hash, bytes)
    say(`deployed ${r.app} (${r.component}) on ${r.routes.join(', ')}`, 'ok')
    $('deploy-form').reset()
    refreshApps()
  } catch (e) {
    say(`deploying failed: ${explain(e)}`, 'error')
  }
}

// ---- live: requests, faults, charts ----

function addRequest(line) {
  const body = $('requests').querySelector('tbody')
  const t = new Date(line.ts_ms || Date.now()).toLocaleTimeString()
  const cls = line.status >= 500 ? 'bad' : line.status >= 400 ? 'warn' : ''
  body.prepend(
    h(
      'tr',
      { class: cls },
      h('td', {}, t),
      h('td', {}, line.app),
      h('td', {}, line.method),
      h('td', { class: 'mono' }, line.path),
      h('td', {}, line.status),
      h('td', {}, (Number(line.duration_ms) || 0).toFixed(1)),
      h('td', { class: 'mono' }, line.request_id),
    ),
  )
  while (body.children.length > MAX_REQUESTS) body.lastChild.remove()
}

function addFault(line) {
  const list = $('faults')
  const t = new Date(line.ts_ms || Date.now()).toLocaleTimeString()
  list.prepend(h('li', {}, h('strong', {}, `${t} ${line.app} ${line.fault}`), ` ${line.message} `, h('span', { class: 'mono' }, line.request_id)))
  while (list.children.length > MAX_FAULTS) list.lastChild.remove()
}

function onLine(line) {
  if (line.kind === 'access') {
    state.traffic.add(line)
    addRequest(line)
  } else if (line.kind === 'fault') {
    addFault(line)
  } else if (line.kind === 'event' && (line.event === 'deploy' || line.event === 'remove')) {
    refreshApps()
  }
}

function stopStream() {
  if (state.stream) state.stream.abort()
  state.stream = null
}

function startStream() {
  stopStream()
  const ctl = new AbortController()
  state.stream = ctl
  const tenant = state.tenant
  const run = async () => {
    while (!ctl.signal.aborted) {
      try {
        $('live').dataset.stream = 'open'
        await state.session.follow(tenant, onLine, ctl.signal)
      } catch (e) {
        if (ctl.signal.aborted) return
        if (e instanceof ApiError && e.status < 500 && e.status !== 429) {
          // Refused (the chain does not grant /log/read on this tenant, say): asking again
          // with the same chain would be refused again.
          $('live').dataset.stream = 'refused'
          say(`the traffic of ${tenant} cannot be followed: ${explain(e)}`, 'error')
          return
        }
        $('live').dataset.stream = 'error'
        say(`the log stream of ${tenant} broke off: ${explain(e)}; retrying`, 'error')
      }
      // A stream ends when the node stops or its invocation's connection closes: wait, then
      // follow again with a fresh invocation.
      await new Promise((r) => setTimeout(r, 2000))
    }
  }
  run()
}

async function listFiles(path) {
  $('fs-path').value = path
  try {
    const { entry, entries } = await state.session.listFiles(state.tenant, path)
    const rows = entry.kind === 'directory' ? entries : [entry]
    const up = path.replace(/\/[^/]*\/?$/, '') || '/'
    $('files').querySelector('tbody').replaceChildren(
      ...(path !== '/' ? [h('tr', {}, h('td', {}, h('button', { class: 'link', onclick: () => listFiles(up) }, '..')), h('td', {}), h('td', {}), h('td', {}))] : []),
      ...rows.map((e) =>
        h(
          'tr',
          {},
          h('td', {}, e.kind === 'directory' ? h('button', { class: 'link', onclick: () => listFiles(e.path) }, e.name + '/') : e.name),
          h('td', {}, e.kind),
          h('td', {}, e.kind === 'file' ? e.size : ''),
          h('td', { class: 'mono' }, e.hash ? e.hash.slice(0, 19) + '…' : ''),
        ),
      ),
    )
  } catch (e) {
    $('files').querySelector('tbody').replaceChildren(h('tr', {}, h('td', { colspan: '4' }, explain(e))))
  }
}

// ---- databases (read only: the console composes SELECT statements only) ----

const MAX_ROWS = 100

function quoteIdent(name) {
  return '"' + name.replace(/"/g, '""') + '"'
}

function cellText(v) {
  if (v === null) return 'NULL'
  if (typeof v === 'object' && v.hex !== undefined) return `x'${v.hex}'`
  return String(v)
}

function showRows(result) {
  $('db-rows').replaceChildren(
    h('thead', {}, h('tr', {}, ...result.columns.map((c) => h('th', {}, c)))),
    h('tbody', {}, ...result.rows.map((r) => h('tr', {}, ...r.map((v) => h('td', {}, cellText(v)))))),
  )
}

async function listDatabases() {
  try {
    const { databases } = await state.session.listDatabases(state.tenant)
    $('databases').replaceChildren(
      ...(databases.length === 0 ? [h('li', {}, 'no database yet')] : []),
      ...databases.map((db) => h('li', { dataset: { db } }, h('button', { class: 'link', onclick: () => listTables(db) }, db))),
    )
  } catch (e) {
    $('databases').replaceChildren(h('li', {}, explain(e)))
  }
}

async function listTables(db) {
  $('db-name').textContent = db
  $('db-rows').replaceChildren()
  try {
    const r = await state.session.query(
      state.tenant,
      db,
      "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    $('db-tables').replaceChildren(
      ...r.rows.map(([name, type]) => h('li', { dataset: { table: name } }, h('button', { class: 'link', onclick: () => showTable(db, name) }, name), ` ${type}`)),
    )
  } catch (e) {
    $('db-tables').replaceChildren(h('li', {}, explain(e)))
  }
}

async function showTable(db, table) {
  try {
    showRows(await state.session.query(state.tenant, db, `SELECT * FROM ${quoteIdent(table)} LIMIT ${MAX_ROWS}`))
    $('db-rows').dataset.table = table
  } catch (e) {
    $('db-rows').replaceChildren(h('tbody', {}, h('tr', {}, h('td', {}, explain(e)))))
  }
}

function tick() {
  draw($('chart-rate'), $('chart-latency'), state.traffic)
}

// ---- wiring ----

$('signin-form').addEventListener('submit', onSignIn)
$('signout').addEventListener('click', signOut)
$('deploy-form').addEventListener('submit', onDeploy)
$('refresh-apps').addEventListener('click', () => refreshApps())
$('refresh-dbs').addEventListener('click', () => listDatabases())
$('fs-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  listFiles($('fs-path').value.trim() || '/')
})
$('tenant-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  const t = $('tenant').value.trim()
  if (t) selectTenant(t)
})
$('deploy-file').addEventListener('change', () => {
  const f = $('deploy-file').files[0]
  if (f && !$('deploy-app').value) $('deploy-app').value = appNameOf(f.name)
})
state.timer = setInterval(tick, 1000)

restore()
  .then((s) => (s ? enter(s) : showSignIn()))
  .catch((e) => {
    showSignIn()
    $('signin-error').textContent = `the kept sign-in could not be used: ${explain(e)}`
  })
