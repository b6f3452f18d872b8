// Guidon's console: plain JavaScript, no build step, no dependency. It
// talks to the server's own API with the session cookie (HttpOnly: this
// script never sees it) and echoes the session's CSRF token on writes.
// The DOM is built with createElement and textContent only.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const main = $('main');
  // `list` / `view`: the screen shown (the flag list, or one flag's page),
  // which the live stream refreshes.
  const state = { session: null, envs: [], env: null, list: null, view: null };
  const RANK = { viewer: 1, editor: 2, admin: 3 };
  const PAGE = 200; // rows rendered at once in the list; "Show more" adds as many
  // The engine's condition operators (a test holds this list to the
  // engine's, through the OpenAPI document).
  const OPERATORS = ['eq', 'neq', 'in', 'not_in', 'contains', 'not_contains', 'starts_with', 'ends_with', 'matches', 'gt', 'gte', 'lt', 'lte', 'semver_eq', 'semver_gt', 'semver_gte', 'semver_lt', 'semver_lte', 'before', 'after', 'exists', 'not_exists', 'in_segment', 'not_in_segment', 'in_cidr'];

  // ------------------------------------------------------------- helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'text') el.textContent = value;
      else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
      else if (name === 'className') el.className = value;
      else el.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function show(...nodes) {
    main.replaceChildren(...nodes);
  }

  function toast(text) {
    const t = $('toast');
    t.textContent = text;
    t.classList.add('shown');
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => t.classList.remove('shown'), 3000);
  }

  function ago(ms) {
    if (!ms) return '';
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 45) return 'just now';
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(ms).toLocaleDateString();
  }

  function when(ms) {
    return h('time', { datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString() }, ago(ms));
  }

  // `user:dana` for a person, a token's name otherwise.
  function who(actor) {
    if (!actor) return 'unknown';
    return actor.startsWith('user:') ? actor.slice(5) : `token ${actor}`;
  }

  function roleIn(env) {
    const roles = (state.session && state.session.roles) || {};
    const own = RANK[roles[env]] || 0;
    const every = RANK[roles['*']] || 0;
    return Math.max(own, every);
  }
  const canEdit = (env) => roleIn(env) >= RANK.editor;
  // Environments where a switch is confirmed first.
  const isProtected = (env) => /^prod/i.test(env);

  async function api(method, path, body, headers = {}) {
    const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      if (!init.headers['Content-Type']) init.headers['Content-Type'] = 'application/json';
    }
    if (method !== 'GET' && state.session) init.headers['X-CSRF-Token'] = state.session.csrf_token;
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      return { status: 0, body: { message: `the server cannot be reached (${e.message})` } };
    }
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = { message: text }; }
    if (response.status === 401 && path !== '/api/v1/session') {
      state.session = null;
      renderLogin('Your session has ended: sign in again.');
    }
    return { status: response.status, body: json, etag: response.headers.get('ETag') };
  }

  const message = (answer) => (answer.body && answer.body.message) || `HTTP ${answer.status}`;
  const enc = encodeURIComponent;

  // ------------------------------------------------------------- routing

  function go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  async function route() {
    state.list = null;
    state.view = null;
    if (!state.session) {
      const answer = await api('GET', '/api/v1/session');
      if (answer.status !== 200) return renderLogin();
      state.session = answer.body;
    }
    if (!state.envs.length) await loadEnvs();
    const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
    if (parts[0] !== 'env' || !parts[1]) {
      const first = state.envs.find((e) => e.name === 'production') || state.envs[0];
      if (!first) return show(h('p', {}, 'You have no role in any environment yet: ask an admin.'));
      return go(`#/env/${enc(first.name)}`);
    }
    state.env = parts[1];
    renderBar();
    follow(state.env);
    if (parts[2] === 'flags' && parts[3]) return renderFlag(state.env, parts[3]);
    if (parts[2] === 'audit') return renderAudit(state.env);
    return renderList(state.env);
  }

  async function loadEnvs() {
    const answer = await api('GET', '/api/v1/envs');
    state.envs = answer.status === 200 ? answer.body.environments : [];
  }

  function renderBar() {
    const bar = $('bar');
    bar.hidden = false;
    $('whoami').textContent = `Signed in as ${state.session.user}`;
    const select = $('env-switch');
    select.replaceChildren(...state.envs.map((e) => h('option', { value: e.name, selected: e.name === state.env }, e.name)));
    select.value = state.env;
  }

  // ------------------------------------------------------------- sign-in

  function renderLogin(notice) {
    unfollow();
    $('bar').hidden = true;
    state.envs = [];
    const error = h('p', { className: 'error', id: 'login-error', role: 'alert' }, notice || '');
    const user = h('input', { id: 'login-user', name: 'user', autocomplete: 'username', required: true });
    const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const form = h('form', {
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = '';
        const answer = await api('POST', '/api/v1/session', { user: user.value, password: password.value });
        if (answer.status !== 200) {
          error.textContent = message(answer);
          password.select();
          return;
        }
        state.session = answer.body;
        password.value = '';
        route();
      },
    },
    h('label', { for: 'login-user' }, 'User', user),
    h('label', { for: 'login-password' }, 'Password', password),
    error,
    h('button', { type: 'submit', className: 'primary' }, 'Sign in'));
    show(h('section', { className: 'card login', 'aria-labelledby': 'login-title' },
      h('h1', { id: 'login-title' }, 'Sign in to Guidon'), form));
    user.focus();
  }

  async function signOut() {
    await api('DELETE', '/api/v1/session');
    state.session = null;
    renderLogin('Signed out.');
  }

  // ------------------------------------------------------------- the list

  async function renderList(env) {
    const answer = await api('GET', `/api/v1/envs/${enc(env)}/overview`);
    if (answer.status !== 200) return show(h('p', { className: 'alert', role: 'alert' }, message(answer)));
    let flags = answer.body.flags;
    const search = h('input', { id: 'search', type: 'search', placeholder: 'key or description', autocomplete: 'off' });
    const filter = h('select', { id: 'filter' },
      h('option', { value: 'all' }, 'All flags'),
      h('option', { value: 'on' }, 'On'),
      h('option', { value: 'off' }, 'Off'),
      h('option', { value: 'boolean' }, 'Boolean'),
      h('option', { value: 'variants' }, 'With variants'));
    const count = h('p', { className: 'count', id: 'count', 'aria-live': 'polite' });
    const body = h('tbody');
    let limit = PAGE;
    const more = h('button', { type: 'button', onclick: () => { limit += PAGE; draw(); } }, 'Show more');

    function matches(f) {
      const q = search.value.trim().toLowerCase();
      if (q && !f.key.toLowerCase().includes(q) && !f.description.toLowerCase().includes(q)) return false;
      switch (filter.value) {
        case 'on': return f.enabled;
        case 'off': return !f.enabled;
        case 'boolean': return f.variants === 0;
        case 'variants': return f.variants > 0;
        default: return true;
      }
    }

    function row(f) {
      return h('tr', {},
        h('td', { className: 'key' }, h('a', { href: `#/env/${enc(env)}/flags/${enc(f.key)}` }, f.key)),
        h('td', {}, h('span', { className: `badge ${f.enabled ? 'on' : 'off'}` }, f.enabled ? 'On' : 'Off')),
        h('td', {}, f.variants ? `${f.variants} variants` : 'boolean'),
        h('td', {}, f.rollout === null || f.rollout === undefined ? '—' : `${f.rollout} %`),
        h('td', { className: 'hide-narrow' }, f.changed_at_ms ? [who(f.changed_by), ', ', when(f.changed_at_ms)] : '—'),
        h('td', { className: 'desc hide-narrow' }, f.description || ''));
    }

    function draw() {
      const shown = flags.filter(matches);
      count.textContent = shown.length === flags.length
        ? `${flags.length} flag${flags.length === 1 ? '' : 's'}`
        : `${shown.length} of ${flags.length} flags`;
      body.replaceChildren(...shown.slice(0, limit).map(row));
      more.hidden = shown.length <= limit;
    }
    state.list = {
      env,
      // The live stream's refresh: the new overview, drawn with the same
      // search, filter and length.
      update(overview) { flags = overview.flags; caption.textContent = `Flags of ${env} at revision ${overview.revision}`; draw(); },
      flags: () => flags,
    };
    search.addEventListener('input', () => { limit = PAGE; draw(); });
    filter.addEventListener('change', () => { limit = PAGE; draw(); });

    const caption = h('caption', {}, `Flags of ${env} at revision ${answer.body.revision}`);
    const auditLink = h('a', { href: `#/env/${enc(env)}/audit` }, 'Audit log');
    const toolbar = h('div', { className: 'toolbar' },
      h('label', { for: 'search', className: 'grow' }, 'Search flags', search),
      h('label', { for: 'filter' }, 'Show', filter),
      canEdit(env) ? newFlagForm(env) : null);
    const table = h('div', { className: 'table-wrap' },
      h('table', {},
        caption,
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Flag'), h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col' }, 'Kind'),
          h('th', { scope: 'col' }, 'Rollout'), h('th', { scope: 'col', className: 'hide-narrow' }, 'Last change'),
          h('th', { scope: 'col', className: 'hide-narrow' }, 'Description'))),
        body));
    show(h('h1', {}, `Flags in ${env}`, isProtected(env) ? h('span', { className: 'protected' }, 'protected') : null),
      h('p', {}, auditLink),
      toolbar, count, table, more);
    draw();
  }

  function newFlagForm(env) {
    const key = h('input', { id: 'new-key', autocomplete: 'off', 'aria-describedby': 'new-key-error' });
    const error = h('p', { className: 'field-error', id: 'new-key-error' });
    const form = h('form', {
      className: 'row',
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = '';
        key.removeAttribute('aria-invalid');
        const k = key.value.trim();
        if (!k) { error.textContent = 'a key is needed'; key.setAttribute('aria-invalid', 'true'); return; }
        const answer = await api('PUT', `/api/v1/envs/${enc(env)}/flags/${enc(k)}`,
          { key: k, enabled: false }, { 'If-None-Match': '*' });
        if (answer.status === 201) {
          toast(`Created ${k} (off)`);
          return go(`#/env/${enc(env)}/flags/${enc(k)}`);
        }
        error.textContent = answer.status === 412 ? `${k} exists already` : message(answer);
        key.setAttribute('aria-invalid', 'true');
      },
    },
    h('label', { for: 'new-key' }, 'New flag key', key, error),
    h('button', { type: 'submit' }, 'Create flag'));
    return form;
  }

  // ------------------------------------------------------------- a flag

  async function renderFlag(env, key) {
    const [answer, history] = await Promise.all([
      api('GET', `/api/v1/envs/${enc(env)}/flags/${enc(key)}`),
      api('GET', `/api/v1/envs/${enc(env)}/flags/${enc(key)}/history`),
    ]);
    const back = h('a', { className: 'crumb', href: `#/env/${enc(env)}` }, `← Flags in ${env}`);
    if (answer.status !== 200) return show(back, h('p', { className: 'alert', role: 'alert' }, message(answer)));
    const view = { env, key, flag: answer.body.flag, version: answer.body.version };
    state.view = view;
    const editable = canEdit(env);
    const notice = h('div', { id: 'notice' });

    // A change: a merge patch against the version shown. On 422 each
    // problem goes to its field; on 412 what changed meanwhile is shown and
    // the edit is kept until the person chooses.
    async function patch(change, describe) {
      clearErrors();
      notice.replaceChildren();
      const answer = await api('PATCH', `/api/v1/envs/${enc(env)}/flags/${enc(key)}`, change,
        { 'Content-Type': 'application/merge-patch+json', 'If-Match': String(view.version) });
      if (answer.status === 200 || answer.status === 202) {
        toast(`Saved: ${describe}`);
        return renderFlag(env, key);
      }
      if (answer.status === 412) return conflict(change, describe);
      if (answer.status === 422 && answer.body && answer.body.details) return fieldErrors(answer.body.details);
      notice.replaceChildren(h('p', { className: 'alert', role: 'alert' }, message(answer)));
    }

    async function conflict(change, describe) {
      const [now, log] = await Promise.all([
        api('GET', `/api/v1/envs/${enc(env)}/flags/${enc(key)}`),
        api('GET', `/api/v1/envs/${enc(env)}/flags/${enc(key)}/history`),
      ]);
      if (now.status !== 200) {
        return notice.replaceChildren(h('p', { className: 'alert', role: 'alert' }, `This flag changed meanwhile: ${message(now)}`));
      }
      const entries = (log.body && log.body.history) || [];
      const meanwhile = entries.filter((e) => e.version > view.version);
      const last = meanwhile[meanwhile.length - 1];
      const changed = diff(view.flag, now.body.flag);
      const panel = h('div', { className: 'conflict', role: 'alert', id: 'conflict' },
        h('h2', {}, 'Someone changed this flag while you were editing'),
        h('p', {}, last ? [`${who(last.actor)} saved version ${last.version} `, when(last.at_ms), '.'] : `It is at version ${now.body.version} now.`),
        h('p', {}, 'What changed meanwhile:'),
        h('ul', { id: 'conflict-changes' }, changed.length ? changed.map((c) => h('li', {}, c)) : h('li', {}, 'nothing you can see here')),
        h('p', {}, `Your change, not saved yet: ${describe}.`),
        h('div', { className: 'actions' },
          h('button', { type: 'button', onclick: () => renderFlag(env, key) }, 'Discard my change'),
          h('button', {
            type: 'button',
            className: 'primary',
            onclick: () => {
              view.flag = now.body.flag;
              view.version = now.body.version;
              patch(change, describe);
            },
          }, 'Apply my change on top')));
      notice.replaceChildren(panel);
      panel.querySelector('button.primary').focus();
    }

    function clearErrors() {
      for (const el of main.querySelectorAll('.field-error[data-path]')) el.textContent = '';
      for (const el of main.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    }

    function fieldErrors(details) {
      const general = [];
      for (const d of details) {
        const path = String(d.path || '').replace(/^(flags\[\d+\]|flag)\.?/, '');
        // The field whose path is the longest prefix of the problem's.
        const target = [...main.querySelectorAll('.field-error[data-path]')]
          .filter((el) => path === el.dataset.path || path.startsWith(`${el.dataset.path}.`) || path.startsWith(`${el.dataset.path}[`))
          .sort((a, b) => b.dataset.path.length - a.dataset.path.length)[0];
        if (target) {
          target.textContent = target.textContent ? `${target.textContent}; ${d.message}` : d.message;
          const input = $(target.dataset.for);
          if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
        } else {
          general.push(`${path || 'flag'}: ${d.message}`);
        }
      }
      if (general.length) notice.replaceChildren(h('div', { className: 'alert', role: 'alert' }, h('ul', {}, general.map((g) => h('li', {}, g)))));
    }

    const flag = view.flag;
    const sections = [];
    // Rules, in order: name, all/any, conditions (attribute, operator,
    // values), what it serves; move, add, remove. Values are comma-separated:
    // numbers and true/false are read as such, "quoted" text stays text.
    function rulesEditor() {
      const model = JSON.parse(JSON.stringify(flag.rules || []));
      const original = JSON.stringify(model);
      const list = h('div', { className: 'rules' });
      const parseValues = (text) => text.split(',').map((t) => t.trim()).filter((t) => t !== '').map((t) => {
        if (/^".*"$/.test(t) || /^-?\d+(\.\d+)?$/.test(t) || t === 'true' || t === 'false') {
          try { return JSON.parse(t); } catch { return t; }
        }
        return t;
      });
      const showValues = (values) => (values || []).map((v) => (typeof v === 'string' && (/^-?\d+(\.\d+)?$/.test(v) || v === 'true' || v === 'false') ? JSON.stringify(v) : String(v))).join(', ');
      const serveOf = (rule) => (!rule.serve || !rule.serve.enabled ? 'off' : rule.serve.variant ? `variant:${rule.serve.variant}` : 'on');
      const err = (path, forId) => h('p', { className: 'field-error', 'data-path': path, 'data-for': forId, id: `${forId}-error` });

      function draw() {
        list.replaceChildren(...model.map((rule, r) => {
          const n = r + 1;
          const id = `rule-${r}`;
          const name = h('input', { id: `${id}-name`, value: rule.name || '', autocomplete: 'off', 'aria-describedby': `${id}-name-error` });
          name.addEventListener('input', () => { rule.name = name.value || undefined; });
          const match = h('select', { id: `${id}-match` }, h('option', { value: 'all' }, 'all conditions'), h('option', { value: 'any' }, 'any condition'));
          match.value = rule.match || 'all';
          match.addEventListener('change', () => { rule.match = match.value; });
          const serve = h('select', { id: `${id}-serve`, 'aria-describedby': `${id}-serve-error` },
            h('option', { value: 'on' }, 'on'), h('option', { value: 'off' }, 'off'),
            (flag.variants || []).map((v) => h('option', { value: `variant:${v.key}` }, `variant ${v.key}`)));
          serve.value = serveOf(rule);
          serve.addEventListener('change', () => {
            const kept = rule.serve && rule.serve.percentage !== undefined ? { percentage: rule.serve.percentage } : {};
            rule.serve = serve.value === 'off' ? { enabled: false, ...kept }
              : serve.value === 'on' ? { enabled: true, ...kept } : { enabled: true, variant: serve.value.slice(8), ...kept };
          });
          rule.conditions = rule.conditions || [];
          const conditions = rule.conditions.map((c, k) => {
            const m = k + 1;
            const cid = `${id}-c${k}`;
            const attribute = h('input', { id: `${cid}-attribute`, value: c.attribute || '', autocomplete: 'off', 'aria-describedby': `${cid}-error` });
            attribute.addEventListener('input', () => { c.attribute = attribute.value || undefined; });
            const operator = h('select', { id: `${cid}-operator` }, OPERATORS.map((o) => h('option', { value: o }, o.replace(/_/g, ' '))));
            operator.value = c.operator || 'eq';
            operator.addEventListener('change', () => { c.operator = operator.value; });
            const values = h('input', { id: `${cid}-values`, value: showValues(c.values), autocomplete: 'off', 'aria-describedby': `${cid}-error` });
            values.addEventListener('input', () => { c.values = parseValues(values.value); });
            return h('div', { className: 'row condition' },
              h('label', { for: attribute.id }, `Rule ${n} condition ${m} attribute`, attribute),
              h('label', { for: operator.id }, `Rule ${n} condition ${m} operator`, operator),
              h('label', { for: values.id, className: 'grow' }, `Rule ${n} condition ${m} values`, values),
              h('button', { type: 'button', onclick: () => { rule.conditions.splice(k, 1); draw(); } }, `Remove rule ${n} condition ${m}`),
              err(`rules[${r}].conditions[${k}]`, `${cid}-values`));
          });
          return h('fieldset', { className: 'rule' },
            h('legend', {}, `Rule ${n}`),
            h('div', { className: 'row' },
              h('label', { for: name.id }, `Rule ${n} name`, name),
              h('label', { for: match.id }, `Rule ${n} matches when`, match),
              h('label', { for: serve.id }, `Rule ${n} serves`, serve)),
            err(`rules[${r}].name`, name.id), err(`rules[${r}].serve`, serve.id),
            conditions,
            err(`rules[${r}]`, name.id),
            h('div', { className: 'actions' },
              h('button', { type: 'button', onclick: () => { rule.conditions.push({ attribute: '', operator: 'eq', values: [] }); draw(); } }, `Add a condition to rule ${n}`),
              r > 0 ? h('button', { type: 'button', onclick: () => { model.splice(r - 1, 0, model.splice(r, 1)[0]); draw(); } }, `Move rule ${n} up`) : null,
              r < model.length - 1 ? h('button', { type: 'button', onclick: () => { model.splice(r + 1, 0, model.splice(r, 1)[0]); draw(); } }, `Move rule ${n} down`) : null,
              h('button', { type: 'button', onclick: () => { model.splice(r, 1); draw(); } }, `Remove rule ${n}`)));
        }));
        if (!model.length) list.append(h('p', { className: 'muted' }, 'No rules: every unit goes to the rollout.'));
      }
      draw();
      view.rulesDirty = () => JSON.stringify(model) !== original;
      return h('section', { className: 'card', 'aria-labelledby': 'rules-title' },
        h('h2', { id: 'rules-title' }, 'Rules'),
        h('p', { className: 'muted' }, 'Checked in order; the first that matches decides.'),
        h('form', {
          className: 'stack',
          novalidate: true,
          onsubmit: (event) => { event.preventDefault(); patch({ rules: model }, `${model.length} rule${model.length === 1 ? '' : 's'}`); },
        },
        list,
        h('p', { className: 'field-error', id: 'rules-error', 'data-path': 'rules', 'data-for': 'rules-add' }),
        h('div', { className: 'actions' },
          h('button', { type: 'button', id: 'rules-add', onclick: () => { model.push({ name: undefined, conditions: [{ attribute: '', operator: 'eq', values: [] }], serve: { enabled: true } }); draw(); } }, 'Add rule'),
          h('button', { type: 'submit', className: 'primary' }, 'Save rules'))));
    }

    function variantsEditor() {
      const rows = h('tbody');
      const sum = h('p', { className: 'muted', id: 'variants-sum', 'aria-live': 'polite' });
      let counter = 0;
      const original = (flag.variants || []).map((v) => ({ ...v }));
      const entries = [];

      function addRow(v) {
        const i = counter++;
        const key = h('input', { id: `variant-${i}-key`, autocomplete: 'off', value: v.key || '' });
        const weight = h('input', { id: `variant-${i}-weight`, type: 'number', min: 0, max: 100, step: 'any', value: v.weight === undefined ? 0 : v.weight });
        const value = h('textarea', { id: `variant-${i}-value`, spellcheck: 'false', rows: 1 });
        value.value = v.value === undefined ? 'null' : JSON.stringify(v.value);
        const errors = {
          key: h('p', { className: 'field-error', id: `variant-${i}-key-error`, 'data-for': key.id }),
          weight: h('p', { className: 'field-error', id: `variant-${i}-weight-error`, 'data-for': weight.id }),
          value: h('p', { className: 'field-error', id: `variant-${i}-value-error`, 'data-for': value.id }),
        };
        key.setAttribute('aria-describedby', errors.key.id);
        weight.setAttribute('aria-describedby', errors.weight.id);
        value.setAttribute('aria-describedby', errors.value.id);
        const remove = h('button', { type: 'button', onclick: () => { entries.splice(entries.indexOf(entry), 1); tr.remove(); renumber(); } });
        const labels = [h('label', { for: key.id }), h('label', { for: weight.id }), h('label', { for: value.id })];
        const tr = h('tr', {},
          h('td', {}, labels[0], key, errors.key),
          h('td', {}, labels[1], weight, errors.weight),
          h('td', {}, labels[2], value, errors.value),
          h('td', {}, remove));
        const entry = { v, key, weight, value, errors, labels, remove, valid: true };
        value.addEventListener('input', () => {
          try {
            JSON.parse(value.value);
            errors.value.textContent = '';
            value.removeAttribute('aria-invalid');
            entry.valid = true;
          } catch (e) {
            errors.value.textContent = `not JSON: ${e.message}`;
            value.setAttribute('aria-invalid', 'true');
            entry.valid = false;
          }
        });
        weight.addEventListener('input', total);
        entries.push(entry);
        rows.append(tr);
        renumber();
        return entry;
      }

      // Paths and names follow the row's position.
      function renumber() {
        entries.forEach((e, index) => {
          const n = index + 1;
          e.labels[0].textContent = `Variant ${n} key`;
          e.labels[1].textContent = `Variant ${n} weight`;
          e.labels[2].textContent = `Variant ${n} value (JSON)`;
          e.remove.textContent = `Remove variant ${n}`;
          e.errors.key.dataset.path = `variants[${index}].key`;
          e.errors.weight.dataset.path = `variants[${index}].weight`;
          e.errors.value.dataset.path = `variants[${index}].value`;
        });
        total();
      }

      function total() {
        const t = entries.reduce((s, e) => s + (Number(e.weight.value) || 0), 0);
        sum.textContent = entries.length ? `Weights sum to ${Math.round(t * 1000) / 1000} % (they must sum to 100)` : 'No variants: a boolean flag.';
      }

      function collect() {
        return entries.map((e) => ({ ...e.v, key: e.key.value.trim(), weight: Number(e.weight.value), value: JSON.parse(e.value.value) }));
      }

      for (const v of original) addRow(v);
      total();
      const general = h('p', { className: 'field-error', id: 'variants-error', 'data-path': 'variants', 'data-for': 'variants-add' });
      view.variantsDirty = () => entries.length !== original.length
        || (entries.every((e) => e.valid) && JSON.stringify(collect()) !== JSON.stringify(original));
      return h('section', { className: 'card', 'aria-labelledby': 'variants-title' },
        h('h2', { id: 'variants-title' }, 'Variants'),
        h('form', {
          className: 'stack',
          novalidate: true,
          onsubmit: (event) => {
            event.preventDefault();
            clearErrors();
            const bad = entries.find((e) => !e.valid);
            if (bad) {
              bad.errors.value.textContent = 'not JSON: fix it first';
              bad.value.setAttribute('aria-invalid', 'true');
              return bad.value.focus();
            }
            patch({ variants: collect() }, `variants ${entries.map((e) => `${e.key.value.trim()} ${e.weight.value} %`).join(', ') || 'removed'}`);
          },
        },
        h('div', { className: 'table-wrap' }, h('table', { className: 'variants' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Key'), h('th', { scope: 'col' }, 'Weight (%)'),
            h('th', { scope: 'col' }, 'Value'), h('th', { scope: 'col' }, h('span', { className: 'sr-only' }, 'Remove')))),
          rows)),
        sum, general,
        h('div', { className: 'actions' },
          h('button', { type: 'button', id: 'variants-add', onclick: () => addRow({ key: '', weight: 0, value: null }).key.focus() }, 'Add variant'),
          h('button', { type: 'submit', className: 'primary' }, 'Save variants'))));
    }


    // On/off.
    const stateText = flag.enabled ? 'On' : 'Off';
    if (editable) {
      const sw = h('button', {
        type: 'button', role: 'switch', id: 'enabled', 'aria-checked': String(flag.enabled), className: 'switch',
        'aria-label': `${key} enabled in ${env}`,
        onclick: async () => {
          const next = !flag.enabled;
          const verb = next ? 'on' : 'off';
          if (isProtected(env) && !(await confirmed(`Turn ${key} ${verb} in ${env}?`,
            `${env} is a protected environment: this changes what its users get right away.`, `Turn ${verb}`))) return;
          patch({ enabled: next }, `turn ${verb}`);
        },
      }, h('span', { className: 'knob', 'aria-hidden': 'true' }), stateText);
      sections.push(h('section', { className: 'card', 'aria-labelledby': 'state-title' },
        h('h2', { id: 'state-title' }, 'State'), sw,
        h('p', { className: 'muted' }, flag.enabled ? 'Serving its rules and rollout.' : 'Off for everyone (its off variant, if any).')));
    } else {
      sections.push(h('section', { className: 'card', 'aria-labelledby': 'state-title' },
        h('h2', { id: 'state-title' }, 'State'),
        h('span', { className: `badge ${flag.enabled ? 'on' : 'off'}`, id: 'enabled-state' }, stateText),
        h('p', { className: 'muted' }, 'You can read this environment; an admin can make you an editor.')));
    }

    // Rollout.
    const pct = flag.rollout ? flag.rollout.percentage : null;
    if (editable) {
      const start = pct === null ? 100 : pct;
      const number = h('input', { id: 'rollout', type: 'number', min: 0, max: 100, step: 'any', value: start, 'aria-describedby': 'rollout-error' });
      const range = h('input', { id: 'rollout-range', type: 'range', min: 0, max: 100, step: 1, value: start, 'aria-describedby': 'rollout-error' });
      range.addEventListener('input', () => { number.value = range.value; });
      number.addEventListener('input', () => { range.value = number.value; });
      sections.push(h('section', { className: 'card', 'aria-labelledby': 'rollout-title' },
        h('h2', { id: 'rollout-title' }, 'Rollout'),
        h('p', { className: 'muted' }, pct === null ? 'No rollout: everyone no rule matched gets it.' : `${pct} % of units no rule matched get it.`),
        h('form', {
          className: 'stack',
          // The server checks: its 422 is shown at the field.
          novalidate: true,
          onsubmit: (event) => {
            event.preventDefault();
            const value = Number(number.value);
            if (number.value.trim() === '' || Number.isNaN(value)) {
              clearErrors();
              $('rollout-error').textContent = 'a number from 0 to 100';
              number.setAttribute('aria-invalid', 'true');
              return;
            }
            patch({ rollout: { percentage: value } }, `rollout ${value} %`);
          },
        },
        h('div', { className: 'row' },
          h('label', { for: 'rollout-range', className: 'slider' }, 'Rollout slider', range),
          h('label', { for: 'rollout' }, 'Rollout percentage', number)),
        h('p', { className: 'field-error', id: 'rollout-error', 'data-path': 'rollout', 'data-for': 'rollout' }),
        h('div', { className: 'actions' }, h('button', { type: 'submit', className: 'primary' }, 'Save rollout')))));
    } else {
      sections.push(h('section', { className: 'card', 'aria-labelledby': 'rollout-title' },
        h('h2', { id: 'rollout-title' }, 'Rollout'), h('p', { id: 'rollout-value' }, pct === null ? 'No rollout' : `${pct} %`)));
    }

    // Description.
    if (editable) {
      const text = h('textarea', { id: 'description', 'aria-describedby': 'description-error' });
      text.value = flag.description || '';
      sections.push(h('section', { className: 'card', 'aria-labelledby': 'description-title' },
        h('h2', { id: 'description-title' }, 'Description'),
        h('form', {
          className: 'stack',
          onsubmit: (event) => { event.preventDefault(); patch({ description: text.value }, 'description'); },
        },
        h('label', { for: 'description' }, 'Description', text),
        h('p', { className: 'field-error', id: 'description-error', 'data-path': 'description', 'data-for': 'description' }),
        h('div', { className: 'actions' }, h('button', { type: 'submit' }, 'Save description')))));
    }

    // Variants: key, weight and JSON value per row (checked as typed); the
    // weights must sum to 100, which the server checks and the field shows.
    if (editable) sections.push(variantsEditor());
    else if (flag.variants && flag.variants.length) {
      sections.push(h('section', { className: 'card', 'aria-labelledby': 'variants-title' },
        h('h2', { id: 'variants-title' }, 'Variants'),
        h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Variant'), h('th', { scope: 'col' }, 'Weight'), h('th', { scope: 'col' }, 'Value'))),
          h('tbody', {}, flag.variants.map((v) => h('tr', {}, h('td', {}, v.key), h('td', {}, `${v.weight} %`),
            h('td', {}, h('pre', {}, JSON.stringify(v.value === undefined ? null : v.value)))))))));
    }
    if (editable) sections.push(rulesEditor());
    else if (flag.rules && flag.rules.length) {
      sections.push(h('section', { className: 'card', 'aria-labelledby': 'rules-title' },
        h('h2', { id: 'rules-title' }, `Rules (${flag.rules.length})`),
        h('pre', {}, JSON.stringify(flag.rules, null, 2))));
    }

    // The same flag in the other environments, and promote this one there.
    const others = state.envs.filter((e) => e.name !== env);
    if (others.length) {
      const rows = h('tbody');
      const promote = async (to) => {
        if (isProtected(to) && !(await confirmed(`Promote ${key} to ${to}?`,
          `${to} is a protected environment: its users get this version of ${key} right away.`, 'Promote'))) return;
        const answer = await api('POST', `/api/v1/envs/${enc(env)}/flags/${enc(key)}/promote`, { to });
        if (answer.status === 200 || answer.status === 201 || answer.status === 202) {
          toast(`Promoted ${key} to ${to}`);
          return renderFlag(env, key);
        }
        notice.replaceChildren(h('p', { className: 'alert', role: 'alert' }, `Promote to ${to}: ${message(answer)}`));
      };
      sections.push(h('section', { className: 'card', 'aria-labelledby': 'compare-title' },
        h('h2', { id: 'compare-title' }, 'In other environments'),
        h('div', { className: 'table-wrap' }, h('table', { id: 'compare' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Environment'), h('th', { scope: 'col' }, 'State'),
            h('th', { scope: 'col' }, 'Rollout'), h('th', { scope: 'col' }, 'Promoting this version changes'), h('th', { scope: 'col' }, h('span', { className: 'sr-only' }, 'Promote')))),
          rows))));
      Promise.all(others.map((e) => api('GET', `/api/v1/envs/${enc(e.name)}/flags/${enc(key)}`))).then((answers) => {
        rows.replaceChildren(...others.map((e, i) => {
          const there = answers[i].status === 200 ? answers[i].body.flag : null;
          const same = there && JSON.stringify(there) === JSON.stringify(flag);
          return h('tr', {},
            h('td', {}, h('a', { href: `#/env/${enc(e.name)}/flags/${enc(key)}` }, e.name)),
            h('td', {}, there ? h('span', { className: `badge ${there.enabled ? 'on' : 'off'}` }, there.enabled ? 'On' : 'Off') : 'absent'),
            h('td', {}, there && there.rollout ? `${there.rollout.percentage} %` : '—'),
            h('td', {}, !there ? 'creates it' : same ? 'nothing: the same' : diff(there, flag).join('; ') || 'details'),
            h('td', {}, canEdit(e.name) && !same
              ? h('button', { type: 'button', onclick: () => promote(e.name) }, `Promote to ${e.name}`) : null));
        }));
      });
    }

    // Why does a unit get what it gets? The explain trace for a context.
    const context = h('textarea', { id: 'explain-context', spellcheck: 'false', 'aria-describedby': 'explain-error' });
    context.value = '{"user_id": "user_42"}';
    const contextError = h('p', { className: 'field-error', id: 'explain-error' });
    const trace = h('div', { id: 'explain-result', 'aria-live': 'polite' });
    const parsed = () => {
      try {
        const value = JSON.parse(context.value);
        if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('a context is a JSON object');
        contextError.textContent = '';
        context.removeAttribute('aria-invalid');
        return value;
      } catch (e) {
        contextError.textContent = `not a JSON object: ${e.message}`;
        context.setAttribute('aria-invalid', 'true');
        return null;
      }
    };
    context.addEventListener('input', parsed); // checked as it is typed
    sections.push(h('section', { className: 'card', 'aria-labelledby': 'explain-title' },
      h('h2', { id: 'explain-title' }, 'Why does a user get this?'),
      h('form', {
        className: 'stack',
        onsubmit: async (event) => {
          event.preventDefault();
          const ctx = parsed();
          if (!ctx) return context.focus();
          const answer = await api('POST', `/api/v1/envs/${enc(env)}/evaluate`, { flag: key, context: ctx, explain: true });
          if (answer.status !== 200) {
            contextError.textContent = message(answer);
            context.setAttribute('aria-invalid', 'true');
            return;
          }
          const r = answer.body;
          const steps = Array.isArray(r.explanation) ? r.explanation : [];
          trace.replaceChildren(
            h('p', {}, h('strong', {}, `Served ${JSON.stringify(r.value === undefined ? null : r.value)}`),
              r.variant ? ` (variant ${r.variant})` : '', `, because ${r.reason}.`),
            h('ol', { className: 'history' }, steps.map((st) => h('li', {},
              h('strong', {}, `${st.step}${st.rule ? ` "${st.rule}"` : ''}: ${st.outcome.replace('_', ' ')}`), ` — ${st.detail}`,
              st.conditions && st.conditions.length ? h('ul', {}, st.conditions.map((c) => h('li', {},
                `${c.attribute} ${c.negate ? 'not ' : ''}${c.operator}: saw ${JSON.stringify(c.actual)}, ${c.outcome.replace('_', ' ')}`))) : null))));
        },
      },
      h('label', { for: 'explain-context' }, 'Context (JSON)', context),
      contextError,
      h('div', { className: 'actions' }, h('button', { type: 'submit' }, 'Explain'))),
      trace));

    // History: who, when, what changed from the version before; revert.
    const all = (history.body && history.body.history) || [];
    const entries = all.slice(-20).reverse();
    const revert = async (version) => {
      if (isProtected(env) && !(await confirmed(`Revert ${key} to version ${version} in ${env}?`,
        `${env} is a protected environment: this changes what its users get right away.`, 'Revert'))) return;
      const answer = await api('POST', `/api/v1/envs/${enc(env)}/flags/${enc(key)}/revert`, { version });
      if (answer.status === 200 || answer.status === 202) {
        toast(`Reverted ${key} to version ${version}`);
        return renderFlag(env, key);
      }
      notice.replaceChildren(h('p', { className: 'alert', role: 'alert' }, message(answer)));
    };
    sections.push(h('section', { className: 'card', 'aria-labelledby': 'history-title' },
      h('h2', { id: 'history-title' }, 'History'),
      entries.length ? h('ol', { className: 'history', id: 'history' }, entries.map((e) => {
        const what = e.op === 'delete' ? ['deleted']
          : e.before ? diff(e.before, e.after) : ['created'];
        return h('li', {},
          h('strong', {}, `version ${e.version}`), ` by ${who(e.actor)}, `, when(e.at_ms), `: ${what.join('; ') || 'no visible change'}`,
          editable && e.op === 'upsert' && e.version !== view.version
            ? [' ', h('button', { type: 'button', onclick: () => revert(e.version) }, `Revert to version ${e.version}`)] : null);
      })) : h('p', { className: 'muted' }, 'No history.')));

    // Unsaved edits in the form: a live change then announces itself
    // instead of redrawing the page under the person's hands.
    view.dirty = () => {
      const number = $('rollout');
      const text = $('description');
      return Boolean((number && number.value !== String(pct === null ? 100 : pct))
        || (text && text.value !== (flag.description || ''))
        || (view.variantsDirty && view.variantsDirty())
        || (view.rulesDirty && view.rulesDirty()));
    };
    view.notice = notice;
    show(back,
      h('h1', {}, key, isProtected(env) ? h('span', { className: 'protected' }, env) : null),
      h('p', { className: 'muted', id: 'flag-summary' }, `${flag.description || 'No description.'} · version ${view.version}`),
      notice, ...sections);
  }

  // ------------------------------------------------------------- audit

  // The environment's audit log: every change, newest first, 50 a page.
  async function renderAudit(env) {
    const body = h('tbody');
    const older = h('button', { type: 'button' }, 'Older changes');
    const error = h('div', { id: 'audit-notice' });
    let before = null;
    async function page() {
      const query = before ? `?limit=50&before=${before}` : '?limit=50';
      const answer = await api('GET', `/api/v1/envs/${enc(env)}/audit${query}`);
      if (answer.status !== 200) {
        error.replaceChildren(h('p', { className: 'alert', role: 'alert' }, message(answer)));
        older.hidden = true;
        return;
      }
      for (const e of answer.body.entries) {
        const target = e.kind === 'flag' && e.op !== 'delete'
          ? h('a', { href: `#/env/${enc(env)}/flags/${enc(e.key)}` }, e.key) : e.key;
        const what = e.op === 'delete' ? 'deleted' : e.before ? diff(e.before, e.after).join('; ') || 'no visible change' : 'created';
        body.append(h('tr', {},
          h('td', {}, String(e.revision)), h('td', {}, when(e.at_ms)), h('td', {}, who(e.actor)),
          h('td', {}, `${e.kind} `, target, ` v${e.version}`), h('td', {}, what)));
      }
      before = answer.body.next_before;
      older.hidden = !before;
    }
    older.addEventListener('click', page);
    show(h('a', { className: 'crumb', href: `#/env/${enc(env)}` }, `← Flags in ${env}`),
      h('h1', {}, `Audit log of ${env}`), error,
      h('div', { className: 'table-wrap' }, h('table', {},
        h('caption', {}, 'Every change, newest first'),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Revision'), h('th', { scope: 'col' }, 'When'),
          h('th', { scope: 'col' }, 'Who'), h('th', { scope: 'col' }, 'What'), h('th', { scope: 'col' }, 'Change'))),
        body)),
      older);
    await page();
  }

  // ------------------------------------------------------------- live

  // The environment's stream (Server-Sent Events, read with fetch so it can
  // name the environment in a header; the cookie authenticates it), from
  // the revision the screen was drawn at. Each update refreshes the screen
  // and says who changed what.
  const live = { env: null, controller: null };

  function unfollow() {
    if (live.controller) live.controller.abort();
    live.controller = null;
    live.env = null;
  }

  async function follow(env) {
    if (live.env === env && live.controller) return;
    unfollow();
    const controller = new AbortController();
    live.controller = controller;
    live.env = env;
    const info = await api('GET', `/api/v1/envs/${enc(env)}`);
    let since = info.status === 200 ? info.body.revision : 0;
    let backoff = 500;
    while (!controller.signal.aborted) {
      try {
        const response = await fetch(`/api/v1/sdk/stream?since=${since}`, {
          credentials: 'same-origin',
          headers: { Accept: 'text/event-stream', 'X-Guidon-Environment': env },
          signal: controller.signal,
        });
        if (response.status === 401 || response.status === 403) return;
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        backoff = 500;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n/g, '\n');
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const event = {};
            for (const line of block.split('\n')) {
              const colon = line.indexOf(':');
              if (colon <= 0) continue;
              const field = line.slice(0, colon);
              const text = line.slice(colon + 1).replace(/^ /, '');
              event[field] = field === 'data' && event.data ? `${event.data}\n${text}` : text;
            }
            if (!event.data || (event.event !== 'update' && event.event !== 'snapshot')) continue;
            const message = JSON.parse(event.data);
            since = Math.max(since, message.revision);
            if (live.env === env) await changed(env, message);
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  const mine = (actor) => state.session && actor === `user:${state.session.user}`;

  async function changed(env, message) {
    const keys = message.type === 'update'
      ? message.changes.filter((c) => c.kind === 'flag').map((c) => c.key)
      : null; // a snapshot: anything may have changed
    if (state.list && state.list.env === env) {
      const answer = await api('GET', `/api/v1/envs/${enc(env)}/overview`);
      if (answer.status !== 200 || !state.list || state.list.env !== env) return;
      const before = new Map(state.list.flags().map((f) => [f.key, f]));
      state.list.update(answer.body);
      const after = new Map(answer.body.flags.map((f) => [f.key, f]));
      for (const key of keys || []) {
        const f = after.get(key);
        if (!f) toast(`${key} was deleted`);
        else if (!mine(f.changed_by)) toast(`${key} ${before.has(key) ? 'changed' : 'created'} by ${who(f.changed_by)}`);
      }
      return;
    }
    const view = state.view;
    if (!view || view.env !== env || (keys && !keys.includes(view.key))) return;
    const [now, log] = await Promise.all([
      api('GET', `/api/v1/envs/${enc(env)}/flags/${enc(view.key)}`),
      api('GET', `/api/v1/envs/${enc(env)}/flags/${enc(view.key)}/history`),
    ]);
    if (state.view !== view) return;
    if (now.status !== 200) {
      view.notice.replaceChildren(h('p', { className: 'alert', role: 'alert' }, `${view.key} was deleted meanwhile.`));
      return;
    }
    if (now.body.version === view.version) return;
    const last = ((log.body && log.body.history) || []).at(-1);
    const by = last ? who(last.actor) : 'someone';
    const what = diff(view.flag, now.body.flag).join('; ') || 'changed';
    if (last && mine(last.actor)) return;
    if (view.dirty()) {
      view.notice.replaceChildren(h('div', { className: 'conflict', role: 'status', id: 'live-notice' },
        h('p', {}, `${by} changed this flag while you were editing (version ${now.body.version}): ${what}.`),
        h('div', { className: 'actions' },
          h('button', { type: 'button', onclick: () => renderFlag(env, view.key) }, 'Show the new version'))));
      return;
    }
    await renderFlag(env, view.key);
    toast(`${by} changed ${view.key}: ${what}`);
  }

  // What differs between two versions of a flag, field by field, in words.
  function diff(before, after) {
    const out = [];
    const fields = new Set([...Object.keys(before || {}), ...Object.keys(after || {})]);
    for (const field of fields) {
      const a = before[field];
      const b = after[field];
      if (JSON.stringify(a) === JSON.stringify(b)) continue;
      if (field === 'enabled') out.push(`turned ${b ? 'on' : 'off'} (was ${a ? 'on' : 'off'})`);
      else if (field === 'rollout') out.push(`rollout ${b ? `${b.percentage} %` : 'removed'} (was ${a ? `${a.percentage} %` : 'none'})`);
      else if (field === 'description') out.push(`description "${b || ''}" (was "${a || ''}")`);
      else if (field === 'variants') {
        const split = (vs) => (vs || []).map((v) => `${v.key} ${v.weight} %`).join(', ') || 'none';
        out.push(split(a) === split(b) ? 'variant payloads changed' : `variants ${split(b)} (was ${split(a)})`);
      }
      else out.push(`${field} changed`);
    }
    return out;
  }

  function confirmed(title, text, ok) {
    const dialog = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = ok;
    dialog.returnValue = '';
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    });
  }

  // ------------------------------------------------------------- start

  $('env-switch').addEventListener('change', (event) => go(`#/env/${enc(event.target.value)}`));
  $('sign-out').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  route();
})();
