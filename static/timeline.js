// The cards' timeline (web/templates/_timeline.html), the call result form and the merge page.
// No words of its own: everything a person reads comes rendered (and translated) by the server.
(function () {
  'use strict';

  // "Older": the next page of the timeline is appended in place, the link moves on (without JS it is a link).
  document.addEventListener('click', async (event) => {
    const link = event.target.closest('#timeline-older');
    if (!link) return;
    event.preventDefault();
    const resp = await fetch(link.href, {credentials: 'same-origin'});
    if (!resp.ok) { location.href = link.href; return; }
    const fresh = new DOMParser().parseFromString(await resp.text(), 'text/html');
    const list = document.getElementById('timeline-events');
    fresh.querySelectorAll('#timeline-events > li.event').forEach((item) => list.append(document.adoptNode(item)));
    const next = fresh.getElementById('timeline-older');
    if (next) link.href = next.getAttribute('href'); else link.remove();
  });

  // A result "call back later" needs its time; the field is required only then.
  const resultForm = document.getElementById('call-result-form');
  if (resultForm) {
    const when = resultForm.querySelector('input[name="callback_at"]');
    const sync = () => {
      const chosen = resultForm.querySelector('input[name="result"]:checked');
      when.required = Boolean(chosen && chosen.value === 'callback');
    };
    resultForm.addEventListener('change', sync);
    sync();
  }

  // A merge cannot be undone: ask once, in the words the page carries.
  document.querySelectorAll('form.merge-form[data-confirm]').forEach((form) => {
    form.addEventListener('submit', (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
})();
