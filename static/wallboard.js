// The wallboard (/wallboard): joins the wallboard's socket room and applies the small deltas the server sends
// (only what changed, at most once a second), batched into one DOM update per frame; timers tick locally.
(function () {
  'use strict';
  const board = document.getElementById('wallboard');
  const socket = window.callboardSocket;
  if (!board || !socket) return;
  const {_, label, duration, language} = window.callboardI18n;
  const percent = new Intl.NumberFormat(language, {style: 'percent', maximumFractionDigits: 0});
  const showPercent = (v) => (v === null || v === undefined ? '—' : percent.format(v));
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  // The server's clock at render time against ours: timers count from the server's "since".
  const skew = Number(board.dataset.now) * 1000 - Date.now();
  const timer = (since) => {
    const span = el('span', 'wb-time');
    span.dataset.since = since;
    return span;
  };

  const setFigure = (key, value) => {
    const node = board.querySelector('[data-key="' + key + '"]');
    if (node) node.textContent = node.dataset.format === 'percent' ? showPercent(value) : String(value);
  };
  const setAgent = (ext, agent) => {
    const list = document.getElementById('wb-agents');
    let row = list.querySelector('[data-agent="' + CSS.escape(ext) + '"]');
    if (agent === null) { if (row) row.remove(); return; }
    if (!row) {
      row = el('li');
      row.dataset.agent = ext;
      row.append(el('span', 'wb-name'), ' ', el('span', 'muted', ext), ' ', el('span', 'badge'), ' ', timer(0));
      row.querySelector('.badge').dataset.role = 'state';
      list.append(row);
    }
    row.className = 'agent-' + agent.state;
    row.querySelector('.wb-name').textContent = agent.name;
    const badge = row.querySelector('[data-role=state]');
    badge.className = 'badge agent-' + agent.state;
    badge.textContent = label(agent.state);
    row.querySelector('.wb-time').dataset.since = agent.since;
  };
  const setLine = (line, figures) => {
    const body = document.querySelector('#wb-lines tbody');
    let row = body.querySelector('[data-line="' + CSS.escape(line) + '"]');
    if (figures === null) { if (row) row.remove(); return; }
    if (!row) {
      row = el('tr');
      row.dataset.line = line;
      row.append(el('td', null, line));
      ['offered', 'answered', 'missed', 'abandoned', 'service_level'].forEach((f) => {
        const cell = el('td');
        cell.dataset.field = f;
        row.append(cell);
      });
      body.append(row);
    }
    row.querySelectorAll('[data-field]').forEach((cell) => {
      const v = figures[cell.dataset.field];
      cell.textContent = cell.dataset.field === 'service_level' ? showPercent(v) : String(v);
    });
  };
  const setWaiting = (calls) => {
    const list = document.getElementById('wb-waiting');
    list.replaceChildren(...calls.map((c) => {
      const row = el('li');
      row.append(el('span', null, c.caller || _('withheld')), ' ', el('span', 'muted', c.queue), ' ', timer(c.since));
      return row;
    }));
    document.getElementById('wb-nobody').hidden = calls.length > 0;
  };

  const apply = (changes) => {
    Object.entries(changes).forEach(([key, value]) => {
      if (key === 'total') Object.entries(value || {}).forEach(([k, v]) => setFigure('total.' + k, v));
      else if (key === 'open_callers' || key === 'overdue_callbacks') setFigure(key, value);
      else if (key === 'waiting') setWaiting(value || []);
      else if (key.startsWith('agent:')) setAgent(key.slice(6), value);
      else if (key.startsWith('line:')) setLine(key.slice(5), value);
    });
  };
  // Several deltas in one frame become one DOM update.
  let pending = null;
  socket.on('wallboard', (message) => {
    if (message.full) {
      document.getElementById('wb-agents').replaceChildren();
      document.querySelector('#wb-lines tbody').replaceChildren();
      pending = {};
    }
    pending = Object.assign(pending || {}, message.changes);
    requestAnimationFrame(() => {
      if (pending) apply(pending);
      pending = null;
    });
  });
  const join = () => socket.emit('wallboard_join');
  socket.on('connect', join);
  if (socket.connected) join();

  const tick = () => {
    const now = (Date.now() + skew) / 1000;
    board.querySelectorAll('.wb-time').forEach((span) => {
      const since = Number(span.dataset.since);
      span.textContent = since ? duration(Math.max(0, now - since)) : '';
    });
  };
  tick();
  setInterval(tick, 1000);
})();
