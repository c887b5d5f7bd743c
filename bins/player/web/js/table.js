// The track table: sortable by any column, click a row to follow its track. Rebuilt a
// few times a second (not every frame), the first 200 rows of the sort order.

const ROWS = 200;

/** 12345.6 → "12,346" (toLocaleString is slow in a hot loop). */
function grouped(v) {
  return String(Math.round(v)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

export class TrackTable {
  constructor(table, store, map) {
    this.table = table;
    this.body = table.querySelector('tbody');
    this.store = store;
    this.map = map;
    this.key = 'sensor_id';
    this.desc = false;
    this.more = document.getElementById('table-more');
    this.count = document.getElementById('track-count');
    this.followText = document.getElementById('follow-text');
    this.pool = [];
    table.querySelectorAll('th[data-key]').forEach((th) => {
      th.addEventListener('click', () => {
        if (this.key === th.dataset.key) this.desc = !this.desc;
        else {
          this.key = th.dataset.key;
          this.desc = false;
        }
        this.render();
      });
    });
    this.body.addEventListener('click', (e) => {
      const tr = e.target.closest('tr');
      if (!tr) return;
      const id = Number(tr.dataset.id);
      this.map.follow = this.map.follow === id ? null : id;
      this.map.selected = id;
      this.store.version++;
      this.render();
    });
  }

  /** Rows are made once and reused: a render only rewrites the text that changed. */
  grow(n) {
    while (this.pool.length < n) {
      const tr = document.createElement('tr');
      const text = [];
      let swatch = null;
      for (let k = 0; k < 7; k++) {
        const td = document.createElement('td');
        if (k === 0) {
          swatch = document.createElement('span');
          swatch.className = 'swatch';
          td.appendChild(swatch);
        }
        const node = document.createTextNode('');
        if (k === 6) {
          const b = document.createElement('button');
          b.type = 'button';
          b.appendChild(node);
          td.appendChild(b);
        } else {
          td.appendChild(node);
        }
        text.push(node);
        tr.appendChild(td);
      }
      this.body.appendChild(tr);
      this.pool.push({ tr, text, swatch, swatchColour: null });
    }
  }

  render() {
    const store = this.store;
    const cursor = store.cursorMs();
    const f = store.factors();
    const rows = [];
    for (const t of store.tracks.values()) {
      if (!this.map.shows(t)) continue;
      const x = t.fix;
      rows.push({
        colour: this.map.trackColour(t),
        alarm: store.alarmLevel(x.id),
        sensor_id: x.id,
        kind: x.spherical ? 'S' : 'G',
        altitude: x.alt === null ? null : x.alt * f.altitude.per_si,
        speed: x.spd === null ? null : x.spd * f.speed.per_si,
        heading: x.hdg,
        age: (cursor - x.recvMs) / 1000,
        stale: store.isStale(t, cursor),
      });
    }
    const k = this.key;
    const sign = this.desc ? -1 : 1;
    rows.sort((a, b) => {
      const va = a[k];
      const vb = b[k];
      if (va === vb) return a.sensor_id - b.sensor_id;
      if (va === null) return 1;
      if (vb === null) return -1;
      return (va < vb ? -1 : 1) * sign;
    });
    this.table.querySelectorAll('th[data-key]').forEach((th) => {
      th.classList.toggle('sorted', th.dataset.key === k);
    });
    const shown = rows.slice(0, ROWS);
    this.grow(shown.length);
    shown.forEach((r, i) => {
      const row = this.pool[i];
      row.tr.hidden = false;
      const id = String(r.sensor_id);
      if (row.tr.dataset.id !== id) row.tr.dataset.id = id;
      row.tr.classList.toggle('stale', r.stale);
      row.tr.classList.toggle('followed', this.map.follow === r.sensor_id);
      for (const l of ['watch', 'warning', 'critical']) row.tr.classList.toggle(`alarm-${l}`, r.alarm === l);
      // backgroundColor takes colours only: a bus string cannot load anything.
      const swatch = r.stale ? '#6d7b85' : r.colour;
      if (row.swatchColour !== swatch) {
        row.swatch.style.backgroundColor = swatch;
        row.swatchColour = swatch;
      }
      const texts = [
        String(r.sensor_id),
        r.kind,
        r.altitude === null ? '—' : grouped(r.altitude),
        r.speed === null ? '—' : grouped(r.speed),
        r.heading === null || r.heading === undefined ? '—' : String(Math.round(r.heading) % 360).padStart(3, '0'),
        r.age < 0 ? '0.0' : r.age.toFixed(1),
        this.map.follow === r.sensor_id ? 'unfollow' : 'follow',
      ];
      texts.forEach((t, k) => {
        // Only what changed is written: the table costs no layout it does not need.
        if (row.text[k].data !== t) row.text[k].data = t;
      });
    });
    for (let i = shown.length; i < this.pool.length; i++) this.pool[i].tr.hidden = true;
    this.more.textContent = rows.length > ROWS ? `… and ${rows.length - ROWS} more (sort to see them)` : '';
    const u = `${f.altitude.unit}, ${f.speed.unit}`;
    const all = store.tracks.size;
    this.count.textContent = rows.length === all ? `${all} tracks (${u})` : `${rows.length} of ${all} tracks (${u})`;
    this.followText.textContent = this.map.follow === null ? '' : `following ${this.map.follow}`;
  }
}
