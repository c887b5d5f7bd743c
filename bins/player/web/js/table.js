// The track table: sortable by any column, click a row to follow its track. Rebuilt a
// few times a second (not every frame), the first 200 rows of the sort order.

const ROWS = 200;

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

  render() {
    const store = this.store;
    const cursor = store.cursorMs();
    const f = store.factors();
    const rows = [];
    for (const t of store.tracks.values()) {
      const x = t.fix;
      rows.push({
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
    const frag = document.createDocumentFragment();
    const colour = store.colour();
    for (const r of rows.slice(0, ROWS)) {
      const tr = document.createElement('tr');
      tr.dataset.id = String(r.sensor_id);
      if (r.stale) tr.classList.add('stale');
      if (this.map.follow === r.sensor_id) tr.classList.add('followed');
      const cells = [
        String(r.sensor_id),
        r.kind,
        r.altitude === null ? '—' : Math.round(r.altitude).toLocaleString('en-US'),
        r.speed === null ? '—' : Math.round(r.speed).toLocaleString('en-US'),
        r.heading === null || r.heading === undefined ? '—' : String(Math.round(r.heading)).padStart(3, '0'),
        r.age < 0 ? '0.0' : r.age.toFixed(1),
      ];
      cells.forEach((text, i) => {
        const td = document.createElement('td');
        if (i === 0) {
          const sw = document.createElement('span');
          sw.className = 'swatch';
          // backgroundColor takes colours only: a bus string cannot load anything.
          sw.style.backgroundColor = r.stale ? '#6d7b85' : colour;
          td.appendChild(sw);
        }
        td.appendChild(document.createTextNode(text));
        tr.appendChild(td);
      });
      const td = document.createElement('td');
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = this.map.follow === r.sensor_id ? 'unfollow' : 'follow';
      td.appendChild(b);
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    this.body.replaceChildren(frag);
    this.more.textContent = rows.length > ROWS ? `… and ${rows.length - ROWS} more (sort to see them)` : '';
    const u = `${f.altitude.unit}, ${f.speed.unit}`;
    this.count.textContent = `${rows.length} tracks (${u})`;
    this.followText.textContent = this.map.follow === null ? '' : `following ${this.map.follow}`;
  }
}
