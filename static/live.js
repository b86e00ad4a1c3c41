// Callboard live parts: the socket, screen-pops, agent states, live call lists.
// Everything from a caller or the CRM is set with textContent: nothing is ever parsed as markup.
(function () {
  'use strict';
  if (typeof io === 'undefined') return;
  const socket = io({transports: ['websocket', 'polling']});
  const indicator = document.getElementById('live');
  const stack = document.getElementById('popups');
  const popups = new Map();
  const {_, label, text, fill, dateTime, duration} = window.callboardI18n;

  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const setLive = (on) => {
    if (!indicator) return;
    indicator.textContent = on ? _('live') : _('reconnecting…');
    indicator.className = on ? 'live on' : 'live';
  };
  socket.on('connect', () => {
    setLive(true);
    // Pages with live rows say what they show again on every (re)connection: rooms go with the old socket.
    document.dispatchEvent(new CustomEvent('callboard:connected'));
  });
  socket.on('disconnect', () => setLive(false));
  socket.on('connect_error', () => setLive(false));

  // Desktop notifications when the tab is in the background; permission is asked once.
  const askPermission = () => {
    if ('Notification' in window && Notification.permission === 'default' && !localStorage.cbAsked) {
      localStorage.cbAsked = '1';
      Notification.requestPermission();
    }
  };
  document.addEventListener('click', askPermission, {once: true});
  // A desktop notification when the person allowed them (task reminders use it too); a click brings the tab forward.
  window.callboardNotify = (title, body, options) => {
    if (!('Notification' in window) || Notification.permission !== 'granted') return null;
    const n = new Notification(title, Object.assign({body: body}, options || {}));
    n.onclick = () => { window.focus(); n.close(); };
    return n;
  };

  function renderPopup(p) {
    const card = el('section', 'popup ringing');
    card.dataset.callId = p.call_id;
    card.dataset.ring = String(p.ringing_since ?? '');  // which ring of the call this card is for
    card.setAttribute('role', 'alert');
    const head = el('div', 'popup-head');
    head.append(el('span', 'badge ringing', p.originated ? _('Calling out') : _('Ringing')));
    const close = el('button', 'link close', '×');
    close.title = _('Close');
    close.addEventListener('click', () => { card.remove(); popups.delete(p.call_id); });
    head.append(close);
    card.append(head);
    card.append(el('div', 'popup-number', p.number ? p.display : _('withheld')));
    const who = p.contact ? p.contact.name : (p.caller_name || '');
    if (who) card.append(el('div', 'popup-name', who));
    if (p.company) card.append(el('div', 'popup-company', p.company.name));
    if (p.lead || (!p.originated && !p.contact && !p.company)) card.append(el('span', 'badge new-lead', _('New lead')));
    if (p.manager) card.append(el('div', 'muted', fill(_('Manager: %(name)s'), {name: p.manager})));
    if (p.deals && p.deals.length) {
      const deals = el('ul', 'popup-deals');
      p.deals.forEach((d) => deals.append(el('li', null, d.title + ' — ' + label(d.stage))));
      card.append(deals);
    }
    if (p.history && p.history.length) {
      const list = el('ul', 'popup-history');
      p.history.forEach((h) => {
        list.append(el('li', null, dateTime(h.when) + ' · ' + label(h.direction) + ' · ' + label(h.outcome) +
          (h.talk_seconds ? ' · ' + duration(h.talk_seconds) : '') + (h.who ? ' · ' + h.who : '')));
      });
      card.append(list);
    }
    const actions = el('div', 'popup-actions');
    // A colleague's client: their card is not ours to open (it would be a 404), so no button for it.
    const me = document.body.dataset;
    const mayOpen = !p.manager_id || String(p.manager_id) === me.user || me.seesAll === '1';
    if (!mayOpen) {
      // nothing to open; the manager's name above says whose client it is
    } else if (p.contact) {
      const open = el('a', 'button', _('Open card'));
      open.href = '/contacts/' + p.contact.id;
      actions.append(open);
    } else if (p.company) {
      const open = el('a', 'button', _('Open card'));
      open.href = '/companies/' + p.company.id;
      actions.append(open);
    } else if (p.lead) {
      const open = el('a', 'button', _('Create contact'));
      open.href = '/leads/' + p.lead.id;
      actions.append(open);
    }
    if (mayOpen && (p.contact || p.company || p.lead)) {
      const deal = el('a', 'button secondary', _('New deal'));
      deal.href = '/deals/new?' + (p.contact ? 'contact=' + p.contact.id
        : p.company ? 'company=' + p.company.id : 'lead=' + p.lead.id);
      actions.append(deal);
    }
    card.append(actions);
    card.append(el('div', 'popup-state muted'));
    return card;
  }

  // Click-to-call: the card shows the number being called, from the click to the end of the call.
  const dialling = new Map();  // call_id → the request ('call_request' events)
  const REQUEST_TEXT = {queued: _('Calling your phone…'), ringing: _('Your phone rings: pick it up'),
    answered: _('Dialling the number…'), failed: _('Not placed')};
  // A card's timers act on whatever card shows the call by then (the full card takes the quick one's place,
  // possibly after the ring stopped), and never on a newer card of the same call.
  const latest = (card) => { while (card.replacedBy) card = card.replacedBy; return card; };
  const later = (card, ms, act) => setTimeout(() => act(latest(card)), ms);
  const retire = (callId, card, ms) => later(card, ms, (shown) => {
    shown.remove();
    if (popups.get(callId) === shown) popups.delete(callId);
  });
  socket.on('call_request', (r) => {
    dialling.set(r.call_id, r);
    if (!stack) return;
    let card = popups.get(r.call_id);
    if (!card) {
      card = renderPopup({call_id: r.call_id, display: r.display, originated: true});
      popups.set(r.call_id, card);
      stack.prepend(card);
    }
    const state = card.querySelector('.popup-state');
    if (state) state.textContent = REQUEST_TEXT[r.state] + (r.reason ? ' (' + label(r.reason) + ')' : '');
    if (r.state === 'failed') {
      card.classList.remove('ringing');
      retire(r.call_id, card, 8000);
    }
  });

  socket.on('popup', (p) => {
    if (!stack) return;
    // The PBX reports an originated call by the agent's own extension; show whom they are calling.
    const request = p.originated ? dialling.get(p.call_id) : null;
    if (request) p = Object.assign({}, p, {display: request.display});
    const old = popups.get(p.call_id);
    const card = renderPopup(p);
    popups.set(p.call_id, card);
    if (old && old.dataset.ring === card.dataset.ring) {
      // The full card after the quick one from memory: same place, and what the call did meanwhile kept.
      if (!old.classList.contains('ringing')) {
        card.classList.remove('ringing');
        if (old.classList.contains('fade')) card.classList.add('fade');
        for (const part of ['.popup-state', '.popup-head .badge']) {
          const was = old.querySelector(part), now = card.querySelector(part);
          if (was && now) now.replaceWith(was.cloneNode(true));
        }
      }
      old.replaceWith(card);
      old.replacedBy = card;
      return;
    }
    // Otherwise a new ring (a queue's next round rings this phone again, or the popup of a call being
    // dialled): a fresh card in the old one's place; the old card's timers end with it.
    if (old) old.replaceWith(card); else stack.prepend(card);
    if (document.hidden && (!old || !p.originated)) {
      window.callboardNotify(fill(_('Call: %(number)s'), {number: p.display}),
        (p.contact && p.contact.name) || p.caller_name || _('New lead'));
    }
  });

  socket.on('popup_update', (u) => {
    const card = popups.get(u.call_id);
    if (!card) return;
    const state = card.querySelector('.popup-state');
    const badge = card.querySelector('.popup-head .badge');
    card.classList.remove('ringing');
    if (u.state === 'answered') {
      badge.textContent = _('In call');
      badge.className = 'badge answered';
      state.textContent = fill(_('Answered by %(who)s'), {who: u.answered_by || '…'});
    } else if (u.state === 'stopped') {
      badge.textContent = u.answered_by ? _('Taken') : _('Stopped ringing');
      badge.className = 'badge unknown';
      state.textContent = u.answered_by ? fill(_('Answered by %(who)s'), {who: u.answered_by}) : _('Stopped ringing');
      retire(u.call_id, card, 8000);
    } else if (u.state === 'transferred') {
      state.textContent = fill(_('Transferred to %(who)s'), {who: u.answered_by || '…'});
    } else if (u.state === 'transferred_away') {
      // This agent passed the call on: it is no longer theirs, so the card says so and goes.
      badge.textContent = _('Transferred');
      badge.className = 'badge unknown';
      state.textContent = fill(_('Transferred to %(who)s'), {who: u.answered_by || '…'});
      retire(u.call_id, card, 8000);
    } else if (u.state === 'ended') {
      badge.textContent = _('Ended');
      badge.className = 'badge unknown';
      state.textContent = u.outcome === 'answered'
        ? fill(_('Call ended (%(duration)s)'), {duration: duration(u.talk_seconds)})
        : fill(_('Call ended: %(outcome)s'), {outcome: label(u.outcome)});
      later(card, 15000, (shown) => shown.classList.add('fade'));
      retire(u.call_id, card, 20000);
    }
  });

  // Agents strip (head): idle / ringing / in call / offline, live.
  const agentBadge = (ext, state) => {
    const strip = document.getElementById('agents');
    if (!strip) return;
    let badge = strip.querySelector('[data-ext="' + CSS.escape(ext) + '"]');
    if (!badge) {
      badge = el('span', 'badge');
      badge.dataset.ext = ext;
      strip.append(badge, document.createTextNode(' '));
    }
    badge.className = 'badge agent-' + state;
    badge.textContent = ext + ': ' + label(state);
  };
  socket.on('agent_states', (states) => Object.entries(states).forEach(([ext, st]) => agentBadge(ext, st)));
  socket.on('agent_state', (s) => agentBadge(s.extension, s.state));

  // Lists that follow calls ("My calls", the missed board) reload their table body in place.
  socket.on('call_logged', (c) => {
    // The call is in the log now: its popup offers writing what came of it (web/timeline.py).
    const card = popups.get(c.call_id);
    const actions = card && card.querySelector('.popup-actions');
    if (actions && c.id && !actions.querySelector('.popup-result')) {
      const result = el('a', 'button secondary popup-result', _('Result'));
      result.href = '/calls/' + c.id + '/result';
      actions.append(result);
    }
    document.dispatchEvent(new CustomEvent('callboard:call-logged'));
  });
  socket.on('missed_changed', (m) => document.dispatchEvent(new CustomEvent('callboard:missed-changed', {detail: m})));
  socket.on('task', (t) => {
    document.dispatchEvent(new CustomEvent('callboard:task', {detail: t}));
    const box = document.getElementById('toast');
    if (!box) return;
    box.textContent = t.lead_id ? text(t.text) : fill(_('%(text)s — see the missed-call board'), {text: text(t.text)});
    box.className = 'show';
    setTimeout(() => { box.className = ''; }, 8000);
  });
  window.callboardSocket = socket;

  // Calls a function at most once per `wait` ms however often it is asked: the first ask waits `wait`
  // (a burst of events is one call), one call runs at a time, and asks while it runs make one more call.
  window.callboardCoalesce = (wait, run) => {
    let timer = null, running = false, again = false;
    const fire = async () => {
      timer = null;
      running = true;
      try { await run(); } catch (e) { /* the next event tries again */ }
      running = false;
      if (again) { again = false; schedule(); }
    };
    const schedule = () => {
      if (running) { again = true; return; }
      if (timer === null) timer = setTimeout(fire, wait);
    };
    return schedule;
  };

  // Lists without a delta endpoint re-fetch their own page and swap the named parts in place
  // (same filters, scroll position kept), never reloading the page; coalesced, so a burst of events
  // costs the server one render per REFRESH_WAIT, not one per event.
  const REFRESH_WAIT = 2000;
  const refreshers = new Map();
  const refresh = async (selectors) => {
    const resp = await fetch(location.href, {credentials: 'same-origin'});
    if (!resp.ok) return;
    const fresh = new DOMParser().parseFromString(await resp.text(), 'text/html');
    for (const selector of selectors) {
      const next = fresh.querySelector(selector), current = document.querySelector(selector);
      if (next && current) current.replaceWith(next);
    }
  };
  window.callboardRefresh = (selectors) => {
    const key = selectors.join('|');
    if (!refreshers.has(key)) refreshers.set(key, window.callboardCoalesce(REFRESH_WAIT, () => refresh(selectors)));
    refreshers.get(key)();
  };
})();
