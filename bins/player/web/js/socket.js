// The WebSocket to the display server: requests with ids (each a Promise settled by its
// reply), everything else into the store. Reconnects with back-off; the server starts a
// new session on each connection, so the page re-applies what it wants (onOpen).

export class Link {
  constructor(store, params, onOpen) {
    this.store = store;
    this.params = params;
    this.onOpen = onOpen;
    this.nextId = 1;
    this.waiting = new Map();
    this.backoff = 500;
    this.ws = null;
    this.connect();
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams();
    if (this.params.client) q.set('client', this.params.client);
    if (this.params.operator) q.set('operator', this.params.operator);
    return `${proto}//${location.host}/ws?${q}`;
  }

  connect() {
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      this.store.mark('open');
      this.store.connected = true;
      this.store.changed();
      if (this.onOpen) this.onOpen();
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (msg.t === 'tracks') {
        // Flow control: the server sends the next batches once this one is in.
        this.store.apply(msg);
        ws.send(JSON.stringify({ op: 'ack', seq: msg.seq }));
        return;
      }
      if (msg.t === 'reply') {
        const w = this.waiting.get(msg.id);
        if (w) {
          this.waiting.delete(msg.id);
          if (msg.ok) w.resolve(msg);
          else w.reject(new Error(msg.error || 'refused'));
        }
        return;
      }
      this.store.apply(msg);
    };
    ws.onclose = () => {
      this.store.connected = false;
      this.store.changed();
      for (const w of this.waiting.values()) w.reject(new Error('connection lost'));
      this.waiting.clear();
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 5000);
    };
  }

  /** Send a request; resolves with the reply (or rejects with the server's reason). */
  request(op, fields = {}) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error('not connected'));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ op, id, ...fields }));
      setTimeout(() => {
        if (this.waiting.delete(id)) reject(new Error(`${op}: no reply within 15 s`));
      }, 15000);
    });
  }
}
