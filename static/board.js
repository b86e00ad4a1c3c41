// The deals board: drag a card to another stage (or pick the stage under the card: keyboard, touch, 390 px).
// A move asks the stage API with the card's version; a refusal (stage rules, someone's newer change) is said
// in a toast and the card goes back. After any answer the board is read again, so counts and sums follow.
// Also the deal forms' client fields: a typed name is looked up among the viewer's contacts or companies.
(function () {
  'use strict';
  const {_} = window.callboardI18n;
  const csrf = () => document.querySelector('meta[name=csrf-token]').content;
  // The API's rule codes in the reader's words (the API's own message stays English).
  const RULES = {
    stale: _('Someone changed this deal meanwhile: the board shows it as it is now.'),
    needs_items: _('This stage needs items in the deal.'),
    needs_contract: _('This stage needs a contract.'),
    not_skippable: _('A stage on the way cannot be skipped: move the deal through it.'),
    unshipped: _('Items are not all shipped.'),
  };
  const toast = (text, bad) => window.callboardToast(text, bad);  // static/app.js

  const board = document.getElementById('board');
  // The board as the server has it now, with the same filters: columns, counts, sums and versions.
  const reload = async () => {
    const resp = await fetch(location.href, {credentials: 'same-origin'});
    if (!resp.ok) return;
    const fresh = new DOMParser().parseFromString(await resp.text(), 'text/html').getElementById('board');
    if (fresh) board.replaceChildren(...fresh.childNodes);
    board.dataset.moves = String(Number(board.dataset.moves || 0) + 1);
  };
  const move = async (card, stage) => {
    if (!card || stage === card.dataset.stage) return;
    const column = board.querySelector('.stage-col[data-stage="' + stage + '"]');
    const home = card.parentNode, next = card.nextSibling;
    if (column) column.insertBefore(card, column.querySelector('.deal-card, .more'));  // at once, undone if refused
    try {
      const resp = await fetch('/api/deals/' + card.dataset.deal + '/stage', {method: 'POST',
        credentials: 'same-origin', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf()},
        body: JSON.stringify({stage, version: Number(card.dataset.version)})});
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        const error = body.error || {};
        home.insertBefore(card, next);
        toast(RULES[error.rule] || error.message || _('The deal was not moved'), true);
      }
    } catch (e) {
      home.insertBefore(card, next);
      toast(_('Callboard is not reachable'), true);
    }
    await reload();
  };

  if (board) {
    let dragged = null;
    board.addEventListener('dragstart', (event) => {
      dragged = event.target.closest('.deal-card');
      if (!dragged) return;
      event.dataTransfer.effectAllowed = 'move';
      event.dataTransfer.setData('text/plain', dragged.dataset.deal);
      dragged.classList.add('dragging');
    });
    board.addEventListener('dragend', () => {
      if (dragged) dragged.classList.remove('dragging');
      board.querySelectorAll('.drop-here').forEach((c) => c.classList.remove('drop-here'));
    });
    board.addEventListener('dragover', (event) => {
      const column = event.target.closest('.stage-col');
      if (!column || !dragged) return;
      event.preventDefault();  // this column takes the drop
      board.querySelectorAll('.drop-here').forEach((c) => c !== column && c.classList.remove('drop-here'));
      column.classList.add('drop-here');
    });
    board.addEventListener('drop', (event) => {
      const column = event.target.closest('.stage-col');
      if (!column || !dragged) return;
      event.preventDefault();
      const card = dragged;
      dragged = null;
      column.classList.remove('drop-here');
      move(card, column.dataset.stage);
    });
    // The same move without dragging.
    board.addEventListener('change', (event) => {
      const select = event.target.closest('select.move-to');
      if (select) move(select.closest('.deal-card'), select.value);
    });
  }

  // Client fields: the name typed is looked up; choosing one of the names found sets the hidden id, and an
  // emptied field clears it.
  document.querySelectorAll('input[data-lookup]').forEach((input) => {
    const hidden = input.form.querySelector('input[name="' + input.dataset.target + '"]');
    const list = document.getElementById(input.getAttribute('list'));
    const found = new Map();
    let timer = null;
    input.addEventListener('input', () => {
      const text = input.value.trim();
      if (found.has(input.value)) { hidden.value = found.get(input.value); return; }
      if (!text) { hidden.value = ''; return; }
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const resp = await fetch('/api/' + input.dataset.lookup + '?limit=10&q=' + encodeURIComponent(text),
          {credentials: 'same-origin'});
        if (!resp.ok) return;
        const items = (await resp.json()).items || [];
        list.replaceChildren(...items.map((p) => {
          const label = p.name + ' · #' + p.id;
          found.set(label, p.id);
          const option = document.createElement('option');
          option.value = label;
          return option;
        }));
      }, 250);
    });
  });
})();
