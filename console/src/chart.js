// Live request rate and latency, from the access lines of the tenant's log stream: one bucket
// a second over the last minute, drawn on a canvas (no chart library).

const WINDOW_SECS = 60

export class Traffic {
  constructor() {
    this.buckets = new Map() // second -> {count, totalMs, maxMs}
    this.total = 0
  }

  /** Counts one access line (`ts_ms`, `duration_ms`). */
  add(line) {
    const sec = Math.floor((line.ts_ms || Date.now()) / 1000)
    const b = this.buckets.get(sec) || { count: 0, totalMs: 0, maxMs: 0 }
    const ms = Number(line.duration_ms) || 0
    b.count += 1
    b.totalMs += ms
    b.maxMs = Math.max(b.maxMs, ms)
    this.buckets.set(sec, b)
    this.total += 1
  }

  /** The last minute, oldest first: `{sec, count, avgMs, maxMs}` (zeros where idle). */
  series(nowSec = Math.floor(Date.now() / 1000)) {
    for (const sec of this.buckets.keys()) if (sec <= nowSec - WINDOW_SECS) this.buckets.delete(sec)
    const out = []
    for (let sec = nowSec - WINDOW_SECS + 1; sec <= nowSec; sec++) {
      const b = this.buckets.get(sec)
      out.push(b ? { sec, count: b.count, avgMs: b.totalMs / b.count, maxMs: b.maxMs } : { sec, count: 0, avgMs: 0, maxMs: 0 })
    }
    return out
  }
}

function niceMax(v) {
  if (v <= 0) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p
  return 10 * p
}

/** Draws `values` as a line with its axis label on `canvas`. */
function plot(canvas, values, { color, label, unit }) {
  const ctx = canvas.getContext('2d')
  const dpr = window.devicePixelRatio || 1
  const w = canvas.clientWidth
  const h = canvas.clientHeight
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr
    canvas.height = h * dpr
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
  ctx.clearRect(0, 0, w, h)
  const max = niceMax(Math.max(...values))
  const left = 44
  const top = 18
  const bottom = h - 16
  const right = w - 8
  ctx.strokeStyle = '#d0d4da'
  ctx.lineWidth = 1
  ctx.font = '11px system-ui, sans-serif'
  ctx.fillStyle = '#5a6270'
  for (const f of [0, 0.5, 1]) {
    const y = bottom - f * (bottom - top)
    ctx.beginPath()
    ctx.moveTo(left, y)
    ctx.lineTo(right, y)
    ctx.stroke()
    ctx.fillText(String(+(max * f).toFixed(2)), 4, y + 4)
  }
  ctx.fillText(`${label} (${unit}), last ${WINDOW_SECS} s`, left, 12)
  ctx.strokeStyle = color
  ctx.lineWidth = 2
  ctx.beginPath()
  values.forEach((v, i) => {
    const x = left + (i / (values.length - 1)) * (right - left)
    const y = bottom - (v / max) * (bottom - top)
    if (i === 0) ctx.moveTo(x, y)
    else ctx.lineTo(x, y)
  })
  ctx.stroke()
}

/** Redraws both charts and records what they show in `data-*` attributes (read by tests). */
export function draw(rateCanvas, latencyCanvas, traffic) {
  const s = traffic.series()
  plot(rateCanvas, s.map((b) => b.count), { color: '#2563eb', label: 'requests', unit: 'per s' })
  plot(latencyCanvas, s.map((b) => b.avgMs), { color: '#d97706', label: 'latency', unit: 'ms, mean' })
  const inWindow = s.reduce((n, b) => n + b.count, 0)
  rateCanvas.dataset.requests = String(inWindow)
  rateCanvas.dataset.total = String(traffic.total)
  latencyCanvas.dataset.maxMs = String(Math.max(...s.map((b) => b.maxMs)).toFixed(2))
}
