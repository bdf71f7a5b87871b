// The console in a real headless Chromium, driven by Playwright (playwright-core with Debian's
// /usr/bin/chromium): run by the Rust test `e2e_console` (tests/console.rs) against a real node,
// which passes what it set up in the environment:
//   CONSOLE_URL   http://127.0.0.1:PORT/console/ (the management listener)
//   HTTP_URL      http://127.0.0.1:PORT (the node's HTTP listener, for traffic)
//   OWNER_KEY, OWNER_CHAIN  the tenant owner's key file and chain file (tenant acme)
//   ADMIN_KEY     the node's Admin key file
//   COMPONENT     a signed component to deploy as app `web` on route /web
//   OUT_DIR       where the screenshots go
// It prints one JSON line (`{"ok": true, ...}`) when every step passed, and exits non-zero
// with the reason otherwise.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const env = (name) => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} is not set (this script is run by the Rust test e2e_console)`)
  return v
}
const CONSOLE_URL = env('CONSOLE_URL')
const HTTP_URL = env('HTTP_URL')
const OUT_DIR = env('OUT_DIR')
const STEP_MS = 60_000

/** The seed line of a key file, and the 32 seed bytes. */
function secretOf(path) {
  const line = readFileSync(path, 'utf8').split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith('#'))
  return { text: line, bytes: Buffer.from(line, 'base64') }
}
const secrets = [secretOf(env('OWNER_KEY')), secretOf(env('ADMIN_KEY'))]

const profile = mkdtempSync(join(tmpdir(), 'zero-console-chromium-'))
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1280, height: 1100 },
  timeout: STEP_MS,
})
const requests = []
const problems = []
let result = { ok: false }
try {
  const page = context.pages()[0] || (await context.newPage())
  page.setDefaultTimeout(STEP_MS)
  page.on('dialog', (d) => d.accept())
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`))
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console error: ${m.text()}`)
  })
  page.on('request', (r) => requests.push(r))

  // Sign in as the tenant owner with the key and chain files, as `zero` wrote them.
  await page.goto(CONSOLE_URL)
  await page.locator('#signin').waitFor({ state: 'visible' })
  await page.setInputFiles('#key-file', env('OWNER_KEY'))
  await page.setInputFiles('#chain-file', env('OWNER_CHAIN'))
  await page.click('#signin-btn')
  await page.locator('#console').waitFor({ state: 'visible' })
  const role = await page.textContent('#role')
  if (role !== 'Owner') throw new Error(`signed in as ${role}, expected Owner`)
  if ((await page.textContent('#tenant-name')) !== 'acme') throw new Error('the tenant of the chain (acme) was not opened')

  // The app list shows what the test deployed before (app `hello` on /hello).
  await page.locator('#apps tr[data-app="hello"]').waitFor()
  const helloRoutes = await page.textContent('#apps tr[data-app="hello"] td:nth-child(2)')
  if (!helloRoutes.includes('/hello')) throw new Error(`app hello shows routes ${helloRoutes}`)

  // Deploy a component from the page.
  await page.setInputFiles('#deploy-file', env('COMPONENT'))
  await page.fill('#deploy-app', 'web')
  await page.fill('#deploy-routes', '/web')
  await page.click('#deploy-btn')
  await page.locator('#apps tr[data-app="web"]').waitFor()
  const status = await page.textContent('#status')
  if (!status.startsWith('deployed web')) throw new Error(`after the deploy the page says: ${status}`)

  // Traffic to the new app: the chart and the recent requests follow it.
  await page.waitForFunction(() => document.getElementById('live').dataset.stream === 'open')
  const TRAFFIC = 12
  for (let i = 0; i < TRAFFIC; i++) {
    const r = await fetch(`${HTTP_URL}/web?n=${i}`)
    await r.arrayBuffer()
    if (r.status !== 200) throw new Error(`GET /web answered ${r.status}`)
  }
  await page.waitForFunction((n) => Number(document.getElementById('chart-rate').dataset.total) >= n, TRAFFIC)
  await page.waitForFunction(() => Number(document.getElementById('chart-rate').dataset.requests) > 0)
  await page.locator('#requests tbody tr', { hasText: '/web' }).first().waitFor()
  // A fault (the test deployed `boom`, which traps) shows in the fault list.
  await (await fetch(`${HTTP_URL}/boom`)).arrayBuffer()
  await page.locator('#faults li', { hasText: 'boom' }).first().waitFor()
  // The files view lists the tenant's root (deployed code lives in /.zero).
  await page.locator('#files tbody tr', { hasText: '.zero' }).first().waitFor()
  // The databases view: the test's database `notes`, its table, its rows.
  await page.locator('#databases li[data-db="notes"] button').click()
  await page.locator('#db-tables li[data-table="notes"] button').click()
  await page.locator('#db-rows td', { hasText: 'milk' }).first().waitFor()
  // Tenants' data is shown as text: the row `<b>eggs</b>` is not markup.
  await page.locator('#db-rows td', { hasText: '<b>eggs</b>' }).first().waitFor()
  if ((await page.locator('#db-rows b').count()) !== 0) throw new Error('a database cell was inserted as HTML')
  const chartTotal = Number(await page.getAttribute('#chart-rate', 'data-total'))
  await page.screenshot({ path: join(OUT_DIR, 'console-owner.png'), fullPage: true })

  // Remove the deployed app from the page.
  await page.click('#apps tr[data-app="web"] button.danger')
  await page.locator('#apps tr[data-app="web"]').waitFor({ state: 'detached' })

  // Nothing but the identity in IndexedDB: no cookie, nothing in web storage.
  const cookies = await context.cookies()
  if (cookies.length > 0) throw new Error(`the console set cookies: ${JSON.stringify(cookies)}`)
  const storage = await page.evaluate(() => localStorage.length + sessionStorage.length)
  if (storage !== 0) throw new Error('the console wrote to localStorage or sessionStorage')
  // The kept key cannot be read back from the page.
  const extractable = await page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const req = indexedDB.open('zero-console', 1)
        req.onsuccess = () => {
          const get = req.result.transaction('identity').objectStore('identity').get('current')
          get.onsuccess = () => resolve(get.result.key.extractable)
          get.onerror = () => reject(get.error)
        }
        req.onerror = () => reject(req.error)
      }),
  )
  if (extractable !== false) throw new Error('the kept signing key is extractable')

  // Sign out; sign in as the Admin (no chain) and see the tenants.
  await page.click('#signout')
  await page.locator('#signin').waitFor({ state: 'visible' })
  await page.setInputFiles('#key-file', env('ADMIN_KEY'))
  await page.click('#signin-btn')
  await page.locator('#tenants-panel').waitFor({ state: 'visible' })
  await page.locator('#tenants tr[data-tenant="acme"]').waitFor()
  await page.locator('#tenants tr[data-tenant="beta"]').waitFor()
  if ((await page.textContent('#role')) !== 'Admin') throw new Error('the Admin is not shown as Admin')
  await page.screenshot({ path: join(OUT_DIR, 'console-admin.png'), fullPage: true })

  // No request the page made carried a private key, in any form.
  let checked = 0
  for (const r of requests) {
    const headers = await r.allHeaders()
    const body = r.postDataBuffer() || Buffer.alloc(0)
    const text = r.url() + '\n' + JSON.stringify(headers) + '\n' + body.toString('latin1')
    for (const s of secrets) {
      if (text.includes(s.text) || body.includes(s.bytes) || text.includes(s.bytes.toString('hex')) || text.includes(s.bytes.toString('base64url'))) {
        throw new Error(`the request ${r.method()} ${r.url()} carries a private key`)
      }
    }
    checked++
  }
  const signed = requests.filter((r) => r.headers()['authorization']).length
  if (problems.length > 0) throw new Error(problems.join('; '))
  result = { ok: true, requests: checked, signed, chartTotal }
} catch (e) {
  result = { ok: false, error: e.message, problems }
  try {
    const page = context.pages()[0]
    if (page) await page.screenshot({ path: join(OUT_DIR, 'console-failure.png'), fullPage: true })
  } catch {
    // the failure itself is what matters
  }
} finally {
  await context.close()
  rmSync(profile, { recursive: true, force: true })
}
writeFileSync(join(OUT_DIR, 'result.json'), JSON.stringify(result) + '\n')
console.log(JSON.stringify(result))
process.exit(result.ok ? 0 : 1)
