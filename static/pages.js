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
  // Missed board: a change (new missed call, callback, resolve) refreshes rows and figures in place.
  on('callboard:missed-changed', '#missed-table',
    () => window.callboardRefresh(['#missed-table tbody', '#figures']));

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

  // The printable offer's button.
  document.querySelectorAll('[data-print]').forEach((b) => b.addEventListener('click', () => window.print()));
})();
