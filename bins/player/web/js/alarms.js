// The alarm panel: the alarms in force for what this tab shows, newest first (shelved
// ones last), each in its level's colour with its line, when it was raised and who
// acknowledged it; Ack, Shelve (an hour) and Unshelve go to the alarmer as this tab's
// operator, and every tab sees the result.

import { ALARM_COLOURS } from './tools.js';

export class AlarmPanel {
  constructor(list, head, store, act) {
    this.list = list;
    this.head = head;
    this.store = store;
    this.act = act; // (action, id) => Promise
    this.key = '';
    list.addEventListener('click', (e) => {
      const b = e.target.closest('button[data-action]');
      if (!b) return;
      b.disabled = true;
      this.act(b.dataset.action, b.closest('li').dataset.id).finally(() => { b.disabled = false; });
    });
  }

  render() {
    const alarms = this.store.alarmList();
    const key = alarms.map((a) => `${a.id}|${a.seq}`).join(',');
    if (key === this.key) return;
    this.key = key;
    const active = alarms.filter((a) => !a.shelved_until_ms).length;
    this.head.textContent = alarms.length === 0 ? 'Alarms: none' : `Alarms: ${active} active${alarms.length > active ? `, ${alarms.length - active} shelved` : ''}`;
    this.head.classList.toggle('alarming', alarms.some((a) => a.active && !a.shelved_until_ms && !a.acknowledged));
    this.list.replaceChildren(...alarms.map((a) => this.item(a)));
  }

  item(a) {
    const li = document.createElement('li');
    li.dataset.id = a.id;
    li.className = `alarm ${a.level || 'cleared'}${a.acknowledged ? ' acked' : ''}${a.shelved_until_ms ? ' shelved' : ''}`;
    li.style.borderLeftColor = ALARM_COLOURS[a.level] || '#6d7b85';
    const badge = document.createElement('span');
    badge.className = 'level';
    badge.textContent = (a.level || 'cleared').toUpperCase();
    badge.style.color = ALARM_COLOURS[a.level] || '#6d7b85';
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = a.text;
    const meta = document.createElement('div');
    meta.className = 'meta';
    const who = a.acknowledged ? ` · acked by ${a.operator}` : '';
    const shelf = a.shelved_until_ms ? ` · shelved by ${a.operator} until ${new Date(a.shelved_until_ms).toISOString().slice(11, 19)}Z` : '';
    meta.textContent = `${a.at.slice(11, 23)}Z${who}${shelf}`;
    const buttons = document.createElement('span');
    buttons.className = 'actions';
    const button = (action, label) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.action = action;
      b.textContent = label;
      buttons.appendChild(b);
    };
    if (a.active && !a.acknowledged) button('ack', 'Ack');
    if (a.shelved_until_ms) button('unshelve', 'Unshelve');
    else button('shelve', 'Shelve 1h');
    li.append(badge, text, buttons, meta);
    return li;
  }
}
