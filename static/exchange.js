// Spreadsheets in and out: export links on every list page (keeping its filters), and the import page's preview,
// column mapping, check and import.
(function () {
  'use strict';
  const {_, fill} = window.callboardI18n;
  const csrf = () => document.querySelector('meta[name=csrf-token]').content;

  // Each list page gets "Export: XLSX CSV" with the filters it shows (its query string).
  const LISTS = {'/calls': 'calls', '/contacts': 'contacts', '/companies': 'companies', '/leads': 'leads',
    '/deals': 'deals', '/stock': 'stock'};
  const list = LISTS[location.pathname];
  const head = document.querySelector('.page-head');
  if (list && head) {
    const links = document.createElement('span');
    links.className = 'export-links';
    links.append(_('Export:'), ' ');
    for (const format of ['xlsx', 'csv']) {
      const a = document.createElement('a');
      a.href = `/export/${list}.${format}${location.search}`;
      a.textContent = format.toUpperCase();
      a.dataset.export = format;
      links.append(a, ' ');
    }
    head.append(links);
  }

  const form = document.getElementById('import-form');
  if (!form) return;
  const fields = JSON.parse(form.dataset.fields);
  const section = document.getElementById('import-mapping');
  const result = document.getElementById('import-result');
  const table = document.getElementById('import-table');
  const cell = (tag, text) => {
    const node = document.createElement(tag);
    node.textContent = text;
    return node;
  };

  const post = async (url, extra) => {
    const body = new FormData();
    body.append('file', form.file.files[0]);
    for (const [k, v] of Object.entries(extra)) body.append(k, v);
    const r = await fetch(url, {method: 'POST', headers: {'X-CSRF-Token': csrf()}, body});
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.error.message);
    return answer;
  };

  const showPreview = (p) => {
    const thead = table.tHead, tbody = table.tBodies[0];
    thead.replaceChildren();
    tbody.replaceChildren();
    const choose = document.createElement('tr'), names = document.createElement('tr');
    p.headers.forEach((header, i) => {
      const select = document.createElement('select');
      select.className = 'import-field';
      select.setAttribute('aria-label', fill(_('Field for column %(column)s'), {column: header || i + 1}));
      select.append(new Option(_('— do not import —'), ''));
      for (const [code, name] of fields[p.kind]) select.append(new Option(name, code, false, p.mapping[i] === code));
      const th = document.createElement('th');
      th.append(select);
      choose.append(th);
      names.append(cell('th', header));
    });
    thead.append(choose, names);
    for (const row of p.rows) {
      const tr = document.createElement('tr');
      for (const value of row) tr.append(cell('td', value));
      tbody.append(tr);
    }
    const how = p.format === 'csv'
      ? fill(_('CSV, %(encoding)s, delimiter "%(delimiter)s"'), {encoding: p.encoding, delimiter: p.delimiter === '\t' ? 'Tab' : p.delimiter})
      : 'XLSX';
    document.getElementById('import-detected').textContent =
      fill(_('%(how)s; %(rows)s rows. Choose the field of each column; the first rows are shown.'), {how, rows: p.row_count});
    result.replaceChildren();
    section.hidden = false;
  };

  const showResult = (r) => {
    result.replaceChildren();
    const line = r.dry_run ? _('Check (nothing saved): %(created)s new, %(updated)s updated, %(skipped)s skipped, %(errors)s with errors.')
      : _('Imported: %(created)s new, %(updated)s updated, %(skipped)s skipped, %(errors)s with errors.');
    result.append(cell('p', fill(line, {created: r.created, updated: r.updated, skipped: r.skipped, errors: r.error_count})));
    if (!r.errors.length) return;
    const t = document.createElement('table');
    t.className = 'list compact';
    const h = document.createElement('tr');
    h.append(cell('th', _('Row')), cell('th', _('Field')), cell('th', _('Problem')));
    t.append(h);
    for (const e of r.errors) {
      const tr = document.createElement('tr');
      const named = (fields[form.kind.value] || []).find(([code]) => code === e.field);
      tr.append(cell('td', e.row), cell('td', named ? named[1] : (e.field || '')), cell('td', e.message));
      t.append(tr);
    }
    result.append(t);
  };

  const fail = (error) => {
    result.replaceChildren(cell('p', error.message));
    result.firstChild.className = 'error';
    section.hidden = false;
  };

  document.getElementById('import-preview').addEventListener('click', async () => {
    if (!form.reportValidity()) return;
    try {
      showPreview(await post(`/api/import/${form.kind.value}/preview`, {}));
    } catch (error) { fail(error); }
  });
  const run = (dryRun) => async () => {
    const mapping = [...table.querySelectorAll('select.import-field')].map((s) => s.value || null);
    try {
      showResult(await post(`/api/import/${form.kind.value}`, {mapping: JSON.stringify(mapping),
        on_duplicate: form.on_duplicate.value, dry_run: dryRun ? '1' : '0'}));
    } catch (error) { fail(error); }
  };
  document.getElementById('import-dry-run').addEventListener('click', run(true));
  document.getElementById('import-run').addEventListener('click', run(false));
  form.kind.addEventListener('change', () => { section.hidden = true; });
})();
