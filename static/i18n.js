// Callboard's words and formats for the page's JavaScript: the catalog the server embedded in the page
// (#callboard-i18n: messages, labels for the API's codes, formats), dates in the company's time zone.
(function () {
  'use strict';
  const node = document.getElementById('callboard-i18n');
  const c = node ? JSON.parse(node.textContent) : {language: 'en', zone: undefined, messages: {}, labels: {},
    server_texts: [], labelled: [], units: {hour: '{0} h', minute: '{0} min', second: '{0} s'}, intl: {date: {}, time: {}}};
  const _ = (message) => c.messages[message] || message;
  const label = (code) => (code ? (c.labels[code] || _(String(code).replace(/_/g, ' '))) : '');
  const fill = (template, values) => template.replace(/%\((\w+)\)s/g, (m, name) => (name in values ? values[name] : m));
  const texts = c.server_texts.map(([pattern, template]) => [new RegExp(pattern, 's'), template]);
  // A sentence the server stored in English (a task title, a notification): the reader's words for it.
  const text = (sentence) => {
    if (!sentence) return '';
    for (const [pattern, template] of texts) {
      const match = pattern.exec(sentence);
      if (!match) continue;
      const values = {};
      for (const [k, v] of Object.entries(match.groups || {})) values[k] = c.labelled.includes(k) ? label(v) : v;
      return fill(template, values);
    }
    return sentence;
  };
  const dateFormat = new Intl.DateTimeFormat(c.language, {...c.intl.date, timeZone: c.zone});
  const timeFormat = new Intl.DateTimeFormat(c.language, {...c.intl.time, timeZone: c.zone});
  // '28.11.2026 19:41' in the company's zone, whatever the browser's zone is.
  const dateTime = (value) => {
    const d = new Date(value);
    return isNaN(d) ? '' : dateFormat.format(d) + ' ' + timeFormat.format(d);
  };
  const unit = (name, value) => c.units[name].replace('{0}', value);
  // 65 → '1 мин 05 с', like the pages.
  const duration = (seconds) => {
    const s = Math.round(seconds || 0), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const parts = [];
    if (h) parts.push(unit('hour', h));
    if (h || m) parts.push(unit('minute', h ? String(m).padStart(2, '0') : m));
    parts.push(unit('second', h || m ? String(r).padStart(2, '0') : r));
    return parts.join(' ');
  };
  window.callboardI18n = {_, label, text, fill, dateTime, duration, language: c.language, zone: c.zone};
})();
