// The time conductor: one timeline under the map. It shows a span of time, where the
// archive holds data (density bands), the tags, the live edge and the cursor. Dragging
// or clicking into the past asks for a replay there; clicking a tag seeks to it;
// shift+drag chooses a window (to export), shift+click forgets it.

const SPANS = [60e3, 5 * 60e3, 15 * 60e3, 30 * 60e3, 3600e3, 6 * 3600e3, 24 * 3600e3, 7 * 24 * 3600e3];

function two(n) {
  return String(n).padStart(2, '0');
}

function clock(ms, withSeconds) {
  const d = new Date(ms);
  const hm = `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}`;
  return withSeconds ? `${hm}:${two(d.getUTCSeconds())}` : hm;
}

export class Timeline {
  constructor(canvas, store, actions) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.store = store;
    this.actions = actions; // {seek(ms), live(), coverage(start, end, buckets)}
    this.span = 30 * 60e3;
    this.end = null; // null: the right edge follows the live edge
    this.asked = '';
    this.askedAt = 0;
    this.scrub = null;
    this.hover = null;
    this.selecting = null;
    this.listeners();
  }

  size() {
    return [this.canvas.clientWidth, this.canvas.clientHeight];
  }

  range(now) {
    const end = this.end === null ? now + this.span * 0.02 : this.end;
    return [end - this.span, end];
  }

  xOf(ms, now) {
    const [w] = this.size();
    const [a, b] = this.range(now);
    return ((ms - a) / (b - a)) * w;
  }

  msOf(x, now) {
    const [w] = this.size();
    const [a, b] = this.range(now);
    return a + (x / w) * (b - a);
  }

  /** The tag marker under `x`, if any. */
  tagAt(x, now) {
    let best = null;
    let bestD = 7;
    for (const t of this.store.tags.values()) {
      const ms = Date.parse(t.at);
      const d = Math.abs(this.xOf(ms, now) - x);
      if (d < bestD) {
        bestD = d;
        best = t;
      }
    }
    return best;
  }

  listeners() {
    const c = this.canvas;
    const now = () => this.store.now();
    c.addEventListener('mousedown', (e) => {
      if (e.shiftKey) {
        this.selecting = this.msOf(e.offsetX, now());
        this.store.selectRange(null);
        return;
      }
      const tag = e.offsetY < 22 ? this.tagAt(e.offsetX, now()) : null;
      if (tag) {
        this.actions.seek(Date.parse(tag.at));
        return;
      }
      this.scrub = { last: 0, x: e.offsetX };
      this.scrubTo(e.offsetX, true);
    });
    c.addEventListener('mousemove', (e) => {
      this.hover = e.offsetX;
      const tag = e.offsetY < 22 ? this.tagAt(e.offsetX, now()) : null;
      c.title = tag ? `${tag.comment} (${tag.at})` : '';
      if (this.scrub) this.scrubTo(e.offsetX, false);
      if (this.selecting !== null) this.selectTo(e.offsetX);
    });
    c.addEventListener('mouseleave', () => {
      this.hover = null;
    });
    window.addEventListener('mouseup', (e) => {
      const x = e.clientX - c.getBoundingClientRect().left;
      if (this.selecting !== null) {
        this.selectTo(x);
        this.selecting = null;
        return;
      }
      if (!this.scrub) return;
      this.scrub = null;
      this.scrubTo(x, true);
    });
    c.addEventListener('wheel', (e) => {
      e.preventDefault();
      const t = now();
      const at = this.msOf(e.offsetX, t);
      let i = SPANS.findIndex((s) => s >= this.span);
      if (i < 0) i = SPANS.length - 1;
      i = Math.max(0, Math.min(SPANS.length - 1, i + Math.sign(e.deltaY)));
      const frac = e.offsetX / this.size()[0];
      this.span = SPANS[i];
      if (this.end !== null || e.shiftKey) {
        this.end = Math.min(at + (1 - frac) * this.span, t + this.span * 0.02);
      }
      this.store.version++;
    }, { passive: false });
  }

  /** The window from where shift+drag began to `x` (none while it is a click). */
  selectTo(x) {
    const ms = this.msOf(Math.max(0, x), this.store.now());
    const [a, b] = [Math.min(ms, this.selecting), Math.max(ms, this.selecting)];
    this.store.selectRange(b - a >= 1000 ? { start: a, end: b } : null);
  }

  /** The window an export takes: the chosen one, or the span shown (up to now). */
  exportWindow(now) {
    if (this.store.selection) return this.store.selection;
    const [a, b] = this.range(now);
    return { start: a, end: Math.min(b, now) };
  }

  /** Follow the pointer with replays, at most five a second; always on release. */
  scrubTo(x, final) {
    const t = Date.now();
    if (!final && t - (this.scrub ? this.scrub.last : 0) < 200) return;
    if (this.scrub) this.scrub.last = t;
    const now = this.store.now();
    const ms = this.msOf(Math.max(0, x), now);
    if (ms >= now - 500) this.actions.live();
    else this.actions.seek(ms);
  }

  /** Keep the cursor in view and the coverage of the span fresh. */
  track(cursor, now) {
    const [a, b] = this.range(now);
    if (this.store.mode.mode === 'live') {
      this.end = null;
    } else if (cursor < a + this.span * 0.05 || cursor > b - this.span * 0.02) {
      this.end = Math.min(cursor + this.span * 0.5, now + this.span * 0.02);
    }
    const [w] = this.size();
    const [s, e] = this.range(now);
    // Ask again when the span moved by a tenth, or every 20 s (the live end grows).
    const grain = this.span / 10;
    const key = `${Math.floor(s / grain)}|${this.span}|${Math.floor(w / 50)}`;
    if ((key !== this.asked || now - this.askedAt > 20000) && this.store.connected) {
      this.asked = key;
      this.askedAt = now;
      this.actions.coverage(s, e, Math.max(10, Math.min(1000, Math.floor(w / 3))));
    }
  }

  draw(cursor, now) {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const [w, h] = this.size();
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    this.track(cursor, now);
    const g = this.ctx;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = '#0e151a';
    g.fillRect(0, 0, w, h);
    const [a, b] = this.range(now);
    // Density bands: where the archive holds data.
    const cov = this.store.coverage;
    if (cov && cov.counts && cov.counts.length) {
      const max = Math.max(1, ...cov.counts);
      for (let i = 0; i < cov.counts.length; i++) {
        const n = cov.counts[i];
        if (!n) continue;
        const t0 = cov.start_ms + i * cov.bucket_ms;
        const x0 = this.xOf(t0, now);
        const x1 = this.xOf(t0 + cov.bucket_ms, now);
        if (x1 < 0 || x0 > w) continue;
        const k = 0.25 + 0.75 * Math.sqrt(n / max);
        g.fillStyle = `rgba(54, 214, 255, ${(0.15 + 0.45 * k).toFixed(3)})`;
        g.fillRect(x0, 30, Math.max(1, x1 - x0), h - 48);
      }
    }
    // The window chosen for export.
    const sel = this.store.selection;
    if (sel) {
      const x0 = this.xOf(sel.start, now);
      const x1 = this.xOf(sel.end, now);
      g.fillStyle = 'rgba(255, 255, 255, 0.10)';
      g.fillRect(x0, 0, x1 - x0, h);
      g.strokeStyle = '#d7e2ea';
      g.setLineDash([3, 3]);
      g.strokeRect(x0 + 0.5, 0.5, x1 - x0 - 1, h - 1);
      g.setLineDash([]);
    }
    // Time axis.
    const steps = [1e3, 5e3, 10e3, 30e3, 60e3, 300e3, 600e3, 1800e3, 3600e3, 6 * 3600e3, 12 * 3600e3, 24 * 3600e3];
    const step = steps.find((s) => (s / (b - a)) * w >= 80) || steps[steps.length - 1];
    g.fillStyle = '#7f909c';
    g.strokeStyle = '#24313a';
    g.font = '10px "DejaVu Sans", sans-serif';
    g.beginPath();
    for (let t = Math.ceil(a / step) * step; t <= b; t += step) {
      const x = this.xOf(t, now);
      g.moveTo(x, h - 16);
      g.lineTo(x, h - 10);
      g.fillText(clock(t, step < 60e3), x + 2, h - 3);
    }
    g.stroke();
    // The live edge.
    const xn = this.xOf(now, now);
    g.fillStyle = 'rgba(25, 195, 125, 0.12)';
    g.fillRect(xn, 0, w - xn, h);
    g.strokeStyle = '#19c37d';
    g.beginPath();
    g.moveTo(xn, 0);
    g.lineTo(xn, h);
    g.stroke();
    // Tags.
    for (const t of this.store.tags.values()) {
      const x = this.xOf(Date.parse(t.at), now);
      if (x < -5 || x > w + 5) continue;
      g.fillStyle = '#f2d03b';
      g.beginPath();
      g.moveTo(x - 5, 4);
      g.lineTo(x + 5, 4);
      g.lineTo(x, 14);
      g.closePath();
      g.fill();
      g.strokeStyle = 'rgba(242, 208, 59, 0.5)';
      g.beginPath();
      g.moveTo(x, 14);
      g.lineTo(x, h - 16);
      g.stroke();
    }
    // The cursor.
    const live = this.store.mode.mode === 'live';
    const xc = this.xOf(cursor, now);
    g.strokeStyle = live ? '#19c37d' : this.store.mode.mode === 'channel' ? '#b48cff' : '#f2a93b';
    g.lineWidth = 2;
    g.beginPath();
    g.moveTo(xc, 0);
    g.lineTo(xc, h);
    g.stroke();
    g.lineWidth = 1;
    g.fillStyle = g.strokeStyle;
    g.font = 'bold 11px "DejaVu Sans", sans-serif';
    const label = live ? 'LIVE' : clock(cursor, true);
    g.fillText(label, Math.min(xc + 4, w - 60), 26);
    if (this.hover !== null && !this.scrub) {
      g.fillStyle = '#d7e2ea';
      g.font = '10px "DejaVu Sans", sans-serif';
      g.fillText(clock(this.msOf(this.hover, now), true), this.hover + 4, h - 20);
    }
  }
}
