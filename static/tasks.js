// Task reminders on every page: at the reminder's time an in-page card and a desktop notification (when allowed).
// A reminder pushed while this page was not listening (between two pages, offline, the server restarting) is
// shown once when the socket (re)connects: the browser remembers which reminders it has shown.
(function () {
  'use strict';
  const socket = window.callboardSocket;
  const stack = document.getElementById('popups');
  if (!socket || !stack) return;
  const {_, text, fill, dateTime} = window.callboardI18n;
  const SHOWN = 'cbRemindersShown';
  const csrf = () => document.querySelector('meta[name=csrf-token]').content;

  const el = (tag, className, content) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined && content !== null) node.textContent = String(content);
    return node;
  };
  const shownKeys = () => {
    try { return JSON.parse(localStorage.getItem(SHOWN) || '[]'); } catch (e) { return []; }
  };
  const keyOf = (r) => r.task_id + '@' + r.remind_at;
  const remember = (key) => {
    const keys = shownKeys().filter((k) => k !== key);
    keys.push(key);
    localStorage.setItem(SHOWN, JSON.stringify(keys.slice(-200)));
  };

  const show = (r) => {
    remember(keyOf(r));
    const old = stack.querySelector('.reminder[data-task="' + CSS.escape(String(r.task_id)) + '"]');
    if (old) old.remove();
    const card = el('section', 'popup reminder');
    card.dataset.task = r.task_id;
    card.setAttribute('role', 'alert');
    const head = el('div', 'popup-head');
    head.append(el('span', 'badge ringing', _('Reminder')));
    const close = el('button', 'link close', '×');
    close.title = _('Close');
    close.addEventListener('click', () => card.remove());
    head.append(close);
    card.append(head);
    const title = text(r.title);
    const due = fill(_('Due %(when)s'), {when: dateTime(r.due_at)});
    card.append(el('div', 'popup-name', title), el('div', 'muted', due));
    const actions = el('div', 'popup-actions');
    const open = el('a', 'button', _('Open task'));
    open.href = r.url;
    actions.append(open);
    if (r.kind !== 'callback') {
      const done = el('button', 'secondary', _('Done'));
      done.addEventListener('click', async () => {
        const resp = await fetch('/api/tasks/' + r.task_id + '/done', {method: 'POST', credentials: 'same-origin',
          headers: {'X-CSRF-Token': csrf()}});
        if (resp.ok || resp.status === 409) card.remove();
      });
      actions.append(done);
    }
    card.append(actions);
    stack.prepend(card);
    if (window.callboardNotify) {
      window.callboardNotify(fill(_('Reminder: %(title)s'), {title: title}), due, {tag: 'task-' + r.task_id});
    }
  };

  socket.on('reminder', show);
  // What was pushed while nobody listened here: once per reminder (another page may have shown it already).
  socket.on('connect', async () => {
    try {
      const resp = await fetch('/api/tasks/reminders', {credentials: 'same-origin'});
      if (!resp.ok) return;
      const seen = shownKeys();
      (await resp.json()).items.filter((r) => !seen.includes(keyOf(r))).forEach(show);
    } catch (e) { /* the next connection asks again */ }
  });
})();
