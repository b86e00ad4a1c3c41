// Page hooks that used to be inline <script>s: the CSP (script-src 'self') runs only our files.
// Each hook acts only when its page's element is there.
(function () {
  'use strict';
  // The printable offer has no catalog (and nothing to say): words stay as they are there.
  const {_, fill} = window.callboardI18n || {_: (m) => m, fill: (t, v) => t.replace(/%\((\w+)\)s/g, (m, k) => v[k])};
  const on = (event, selector, refresh) => {
    if (document.querySelector(selector)) document.addEventListener(event, refresh);
  };
  // Calls: a finished call refreshes the table body in place (same filters), never the whole page.
  on('callboard:call-logged', '#calls-table', () => window.callboardRefresh(['#calls-table tbody']));
  // Leads: a new lead (call, form, chat, e-mail) appears in the inbox without a reload.
  on('callboard:task', '#leads-table', (e) => {
    if (e.detail && e.detail.lead_id) window.callboardRefresh(['#leads-table tbody']);
  });
  // Missed board: a change (new missed call, callback, resolve) brings only the changed rows and the
  // figures (/missed/live, the page's own row markup); each row is replaced, added on top or removed in
  // place. Changes are coalesced: one request per LIVE_WAIT whatever the rate of missed calls.
  const board = document.querySelector('#missed-table tbody');
  if (board && window.callboardSocket) {
    const LIVE_WAIT = 500;
    const changed = new Set();
    const socket = window.callboardSocket;
    const watch = () => socket.emit('watch', 'missed');
    document.addEventListener('callboard:connected', watch);
    if (socket.connected) watch();
    const filters = new URLSearchParams(location.search);
    // Rows new to the page go on top only on the first page (a later page keeps its own rows).
    const firstPage = ![...filters.keys()].some((k) => /^(after|before|cursor|page|offset)/.test(k));
    const apply = async () => {
      const ids = [...changed].slice(0, 200);
      ids.forEach((id) => changed.delete(id));
      if (!ids.length) return;
      const query = new URLSearchParams();
      ['manager', 'line', 'state'].forEach((k) => { if (filters.get(k)) query.set(k, filters.get(k)); });
      query.set('ids', ids.join(','));
      const resp = await fetch('/missed/live?' + query, {credentials: 'same-origin'});
      if (!resp.ok) return;
      const fresh = new DOMParser().parseFromString(await resp.text(), 'text/html');
      const figures = fresh.getElementById('figures'), current = document.getElementById('figures');
      if (figures && current) current.replaceWith(figures);
      const tables = fresh.getElementById('missed-breakdown'), shown = document.getElementById('missed-breakdown');
      if (tables && shown) shown.replaceWith(tables);  // per line / manager / day follow the board too
      const rows = new Map([...fresh.querySelectorAll('tr[data-row]')].map((tr) => [tr.dataset.row, tr]));
      let applied = 0;
      // Newest first in the answer: insert in reverse so the newest ends on top.
      for (const id of [...rows.keys()].reverse()) {
        const row = rows.get(id), old = board.querySelector('tr[data-row="' + id + '"]');
        if (old) old.replaceWith(row);
        else if (firstPage && row.classList.contains('state-resolved')) continue;
        else if (firstPage) board.prepend(row);
        else continue;
        applied += 1;
      }
      for (const id of ids) {
        const old = rows.has(String(id)) ? null : board.querySelector('tr[data-row="' + id + '"]');
        if (old) { old.remove(); applied += 1; }
      }
      const empty = board.querySelector('td.empty');
      if (empty && board.querySelector('tr[data-row]')) empty.closest('tr').remove();
      document.body.dataset.liveRows = String(Number(document.body.dataset.liveRows || 0) + applied);
      if (changed.size) schedule();
    };
    const schedule = window.callboardCoalesce(LIVE_WAIT, apply);
    document.addEventListener('callboard:missed-changed', (e) => {
      ((e.detail && e.detail.rows) || []).forEach((r) => changed.add(r.row_id));
      schedule();
    });
  }

  // Demo mode: place a simulated inbound call from the calls page.
  document.getElementById('demo-call')?.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target, status = document.getElementById('demo-call-status');
    const body = {caller: f.caller.value, extension: f.extension.value,
      answer_after: f.answer.checked ? 3 : null, talk_seconds: 15};
    const r = await fetch('/api/demo/calls', {method: 'POST', headers: {'Content-Type': 'application/json',
      'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}, body: JSON.stringify(body)});
    status.textContent = r.ok ? fill(_('Ringing extension %(extension)s… the call appears here when it ends.'),
      {extension: body.extension}) : (await r.json()).error.message;
  });

  // A recording whose file is gone (moved, deleted by a retention job): say so instead of a silent, dead player.
  // preload="none" means nothing is fetched until play, so the error comes when someone tries to listen.
  // Media errors do not bubble: caught on their way down (capture), for players added later too.
  document.addEventListener('error', (e) => {
    const player = e.target;
    if (!(player instanceof HTMLAudioElement) || !player.src.includes('/recordings/')) return;
    const note = document.createElement('span');
    note.className = 'muted recording-missing';
    note.textContent = _('The recording file is missing');
    player.replaceWith(note);
  }, true);

  // The printable offer's button.
  document.querySelectorAll('[data-print]').forEach((b) => b.addEventListener('click', () => window.print()));
})();
