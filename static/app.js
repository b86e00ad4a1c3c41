// Callboard pages: click-to-call on every phone number; small, no build step.
(function () {
  'use strict';
  const {_, fill} = window.callboardI18n;
  const csrf = () => document.querySelector('meta[name=csrf-token]').content;
  const toast = (text, bad) => {
    const box = document.getElementById('toast');
    box.textContent = text;
    box.className = bad ? 'show bad' : 'show';
    clearTimeout(box._timer);
    box._timer = setTimeout(() => { box.className = ''; }, 5000);
  };
  window.callboardToast = toast;  // other page scripts say things the same way
  document.addEventListener('click', async (event) => {
    const link = event.target.closest('a.phone[data-number]');
    if (!link) return;
    event.preventDefault();
    const body = {number: link.dataset.number};
    if (link.dataset.contact) body.contact_id = Number(link.dataset.contact);
    try {
      const resp = await fetch('/api/calls', {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf()}, body: JSON.stringify(body)});
      const data = await resp.json();
      if (resp.ok) toast(fill(_('Your phone (%(extension)s) rings: pick it up to call %(number)s'),
        {extension: data.extension, number: data.display || link.textContent.trim()}));
      else toast(data.error ? data.error.message : _('The call could not be placed'), true);
    } catch (e) {
      toast(_('Callboard is not reachable'), true);
    }
  });
})();
