#!/usr/bin/env node
// The web console end to end: a real `guidon serve` (started with
// GUIDON_ADMIN_PASSWORD) and the console it serves at `/`, driven in
// headless Chromium (Debian's package) by playwright-core, which is pinned
// in tests/ofrep-web/package-lock.json and shared with that test.
//
// Every control is found the way a screen reader finds it: by role and
// accessible name (getByRole, getByLabel). Checks:
//  1. sign-in: a wrong password says only "wrong user or password"; the
//     session cookie is not visible to JavaScript;
//  2. the list: every flag at a glance (state, kind, rollout, last change
//     with who, description); search and filter; the environment switcher;
//  3. a flag created from the console;
//  4. the switch: in development at once, in production after a
//     confirmation (cancel changes nothing); the change seen through OFREP;
//  5. the rollout slider saves; an invalid percentage is shown at its
//     field from the 422's details[].path, and nothing is stored;
//  6. a concurrent change (412) shows what changed and who changed it,
//     keeps the edit, and applies it on top when asked;
//  7. a viewer sees no control, and the API refuses their writes;
//  8. explain a context (its JSON checked as it is typed), the history of
//     a flag in words, and revert from it;
//  9. live: a change made elsewhere appears in the open list and flag page
//     (and says who made it), and is announced without touching an edit;
// 10. every control of every screen has an accessible name (Chromium's
//     accessibility tree), and the page logs no error (a CSP violation
//     would be one).
//
// Every check prints one line (PASS/FAIL). Exit status: 0 when every check
// passed, 1 otherwise, 2 when the setup failed.
//
// Usage: node e2e.mjs --guidon PATH/TO/guidon [--chromium PATH] [--screenshots DIR]

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
// playwright-core from the shared, pinned install of tests/ofrep-web.
const { chromium } = createRequire(join(here, '..', 'ofrep-web', 'package.json'))('playwright-core');

// How long to wait for what should happen. Not a performance bound.
const WAIT_MS = 10_000;
const RUN_MS = 180_000;
const ADMIN_PASSWORD = `admin-${randomBytes(6).toString('hex')}`;
const VIEWER_PASSWORD = `viewer-${randomBytes(6).toString('hex')}`;

class SetupError extends Error {}

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}${detail ? `: ${detail}` : ''}`);
}

async function api(server, method, path, token, body, headers = {}) {
  const response = await fetch(`${server}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      Accept: 'application/json',
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  return { status: response.status, body: json };
}

function expect(what, answer, ...allowed) {
  if (!allowed.includes(answer.status)) {
    throw new SetupError(`${what}: HTTP ${answer.status}: ${JSON.stringify(answer.body)}`);
  }
  return answer.body;
}

function startGuidon(binary, dir, adminToken) {
  const child = spawn(binary,
    ['serve', '--listen', '127.0.0.1:0', '--database-url', `sqlite://${join(dir, 'guidon.db')}`],
    {
      env: { ...process.env, GUIDON_ADMIN_TOKEN: adminToken, GUIDON_ADMIN_PASSWORD: ADMIN_PASSWORD, GUIDON_LOG: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  let log = '';
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new SetupError('guidon serve did not print its address')), WAIT_MS);
    const onData = (chunk) => {
      log += chunk;
      const m = log.match(/^guidon: listening on (http:\/\/\S+)$/m);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => { clearTimeout(timer); reject(new SetupError(`guidon serve exited (${code}): ${log}`)); });
  });
  return { child, url, log: () => log };
}

async function stopGuidon(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

// Controls of the page that have no accessible name, from Chromium's
// accessibility tree.
const NAMED_ROLES = new Set(['button', 'textbox', 'searchbox', 'combobox', 'slider', 'spinbutton', 'switch',
  'link', 'checkbox', 'radio', 'listbox', 'menuitem', 'tab']);
async function unnamedControls(page) {
  const cdp = await page.context().newCDPSession(page);
  const { nodes } = await cdp.send('Accessibility.getFullAXTree');
  await cdp.detach();
  const controls = nodes.filter((n) => !n.ignored && n.role && NAMED_ROLES.has(n.role.value));
  return {
    count: controls.length,
    unnamed: controls.filter((n) => !n.name || !String(n.name.value || '').trim()).map((n) => n.role.value),
  };
}

async function flagOf(server, token, env, key) {
  return expect(`GET ${env}/${key}`, await api(server, 'GET', `/api/v1/envs/${env}/flags/${key}`, token), 200);
}

async function run(args) {
  const dir = mkdtempSync(join(tmpdir(), 'guidon-console-e2e-'));
  const adminToken = `gdn_${randomBytes(16).toString('hex')}`;
  let guidon;
  let browser;
  try {
    guidon = startGuidon(args.guidon, dir, adminToken);
    const server = await guidon.url;
    console.log(`guidon serve at ${server}`);

    // Flags written by a machine (the admin token), to be seen in the console.
    expect('PUT checkout_redesign', await api(server, 'PUT', '/api/v1/envs/production/flags/checkout_redesign', adminToken, {
      description: 'The new checkout, three variants',
      enabled: true,
      variants: [
        { key: 'control', weight: 34, value: { layout: 'classic' } },
        { key: 'single_page', weight: 33, value: { layout: 'single_page' } },
        { key: 'express', weight: 33, value: { layout: 'express' } },
      ],
      rules: [{ name: 'staff', conditions: [{ attribute: 'email', operator: 'ends_with', values: ['@example.com'] }], serve: { enabled: true, variant: 'express' } }],
      rollout: { percentage: 10 },
    }), 201);
    expect('PUT dark_mode', await api(server, 'PUT', '/api/v1/envs/production/flags/dark_mode', adminToken,
      { description: 'Dark theme for everyone', enabled: false }), 201);
    expect('PUT search_v2', await api(server, 'PUT', '/api/v1/envs/production/flags/search_v2', adminToken,
      { description: 'Search backed by the new index', enabled: true, rollout: { percentage: 50 } }), 201);
    expect('add viewer', await api(server, 'POST', '/api/v1/users', adminToken,
      { name: 'val', password: VIEWER_PASSWORD, roles: { production: 'viewer' } }), 201);

    browser = await chromium.launch({ executablePath: args.chromium, headless: true, timeout: 60_000 });
    const context = await browser.newContext({ viewport: { width: 1200, height: 860 } });
    const page = await context.newPage();
    const errors = [];
    // Errors the page logs, but not the failed loads of the 4xx answers this
    // test provokes (401, 404, 412, 422: each is checked where it happens).
    page.on('console', (m) => {
      if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) {
        errors.push(m.text());
      }
    });
    page.on('pageerror', (e) => errors.push(e.message));
    const shots = args.screenshots;
    const shoot = async (name, fullPage = true) => {
      if (!shots) return;
      // The toast is fixed to the viewport: it would float mid-page in a full-page picture.
      await page.evaluate(() => document.getElementById('toast').classList.remove('shown'));
      await page.waitForTimeout(300); // its fade-out
      await page.screenshot({ path: join(shots, `console-${name}.png`), fullPage });
    };
    const unnamed = [];
    let audited = 0;
    let screens = 0;
    const audit = async (screen) => {
      const found = await unnamedControls(page);
      audited += found.count;
      screens++;
      for (const role of found.unnamed) unnamed.push(`${screen}: a ${role}`);
    };

    // 1. Sign-in.
    await page.goto(server + '/');
    await page.getByLabel('User').fill('admin');
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const alert = page.getByRole('alert');
    await alert.filter({ hasText: 'wrong user or password' }).waitFor({ timeout: WAIT_MS });
    check('a wrong password says only "wrong user or password"', (await alert.textContent()).trim() === 'wrong user or password');
    await audit('sign-in');
    await shoot('sign-in');
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Flags in production' }).waitFor({ timeout: WAIT_MS });
    const jsCookies = await page.evaluate(() => document.cookie);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'guidon_session');
    check('signed in; the session cookie is HttpOnly, SameSite=Strict, never visible to JavaScript',
      Boolean(session) && session.httpOnly && session.sameSite === 'Strict' && !jsCookies.includes('guidon_session'),
      JSON.stringify({ httpOnly: session && session.httpOnly, sameSite: session && session.sameSite, jsCookies }));

    // 2. The list at a glance.
    const rowOf = (key) => page.getByRole('row').filter({ has: page.getByRole('link', { name: key, exact: true }) });
    const checkout = (await rowOf('checkout_redesign').innerText()).replace(/\s+/g, ' ');
    check('the list shows state, kind, rollout, who changed it and the description',
      /On/.test(checkout) && /3 variants/.test(checkout) && /10 %/.test(checkout) && /token admin-from-env/.test(checkout)
        && /just now/.test(checkout) && /The new checkout, three variants/.test(checkout), checkout);
    const dark = (await rowOf('dark_mode').innerText()).replace(/\s+/g, ' ');
    check('a boolean flag that is off, without rollout', /Off/.test(dark) && /boolean/.test(dark) && /—/.test(dark), dark);
    // Another session's change (here a machine's) appears without a reload.
    await page.evaluate(() => { window.notReloaded = true; });
    const t0 = performance.now();
    await api(server, 'PATCH', '/api/v1/envs/production/flags/dark_mode', adminToken,
      { description: 'Dark theme for everyone who asks' }, { 'Content-Type': 'application/merge-patch+json' });
    await rowOf('dark_mode').filter({ hasText: 'Dark theme for everyone who asks' }).waitFor({ timeout: WAIT_MS });
    const listLatency = performance.now() - t0;
    const said = await page.getByRole('status').filter({ hasText: 'dark_mode changed by token admin-from-env' }).count();
    const reloaded = !(await page.evaluate(() => window.notReloaded === true));
    check('a change made elsewhere appears in the open list without a reload, and says who made it', said === 1 && !reloaded,
      `${Math.round(listLatency)} ms from the write to the row (reported, not asserted)`);
    await audit('list');
    await shoot('flags');
    await page.getByLabel('Search flags').fill('index');
    await page.getByText('1 of 3 flags').waitFor({ timeout: WAIT_MS });
    check('search matches descriptions too', await rowOf('search_v2').count() === 1 && await rowOf('dark_mode').count() === 0);
    await page.getByLabel('Search flags').fill('');
    await page.getByLabel('Show').selectOption('off');
    await page.getByText('1 of 3 flags').waitFor({ timeout: WAIT_MS });
    check('the filter shows only flags that are off', await rowOf('dark_mode').count() === 1 && await rowOf('search_v2').count() === 0);

    await page.getByLabel('Show').selectOption('all');
    await page.getByRole('link', { name: 'checkout_redesign', exact: true }).click();
    await page.getByRole('heading', { name: 'Variants' }).waitFor({ timeout: WAIT_MS });
    // Explain a context: JSON checked as it is typed, then the trace.
    const contextBox = page.getByLabel('Context (JSON)');
    await contextBox.fill('{"user_id": ');
    const contextInvalid = await contextBox.getAttribute('aria-invalid');
    const contextMessage = await page.locator('#explain-error').textContent();
    await contextBox.fill('{"user_id": "u1", "email": "ana@example.com"}');
    check('the context is checked as JSON as it is typed',
      contextInvalid === 'true' && /not a JSON object/.test(contextMessage)
        && await contextBox.getAttribute('aria-invalid') === null, contextMessage);
    await page.getByRole('button', { name: 'Explain' }).click();
    const explained = page.locator('#explain-result');
    await explained.filter({ hasText: 'TARGETING_MATCH' }).waitFor({ timeout: WAIT_MS });
    const traceText = (await explained.innerText()).replace(/\s+/g, ' ');
    check('the explain trace names the rule, the condition and the value it saw',
      /variant express/.test(traceText) && /rule "staff": matched/.test(traceText)
        && /email ends_with: saw "ana@example.com", matched/.test(traceText), traceText.slice(0, 300));
    // Variants: weights that do not sum to 100 are refused at the field.
    await page.getByLabel('Variant 3 weight').fill('30');
    check('the weights\' sum is shown as they are typed', /sum to 97 %/.test(await page.locator('#variants-sum').textContent()),
      await page.locator('#variants-sum').textContent());
    await page.getByRole('button', { name: 'Save variants' }).click();
    const weightError = page.locator('#' + await page.getByLabel('Variant 3 weight').getAttribute('aria-describedby'));
    await weightError.filter({ hasText: /sum/ }).waitFor({ timeout: WAIT_MS });
    check('an invalid weight is refused at its field, and nothing is stored',
      await page.getByLabel('Variant 3 weight').getAttribute('aria-invalid') === 'true'
        && (await flagOf(server, adminToken, 'production', 'checkout_redesign')).flag.variants[2].weight === 33,
      await weightError.textContent());
    await shoot('variants-error');
    await page.getByLabel('Variant 1 value (JSON)').fill('{"layout": classic}');
    const valueError = await page.locator('#' + await page.getByLabel('Variant 1 value (JSON)').getAttribute('aria-describedby')).textContent();
    check('a payload is checked as JSON as it is typed', /not JSON/.test(valueError), valueError);
    await page.getByLabel('Variant 1 value (JSON)').fill('{"layout": "classic", "steps": 3}');
    await page.getByLabel('Variant 3 weight').fill('33');
    await page.getByRole('button', { name: 'Save variants' }).click();
    await page.getByText('version 2', { exact: false }).first().waitFor({ timeout: WAIT_MS });
    const variants = (await flagOf(server, adminToken, 'production', 'checkout_redesign')).flag.variants;
    check('fixed, the variants are saved', variants[0].value.steps === 3 && variants[2].weight === 33, JSON.stringify(variants));
    await audit('flag with variants');
    await shoot('flag');
    await page.setViewportSize({ width: 390, height: 800 });
    await page.goto(`${server}/#/env/production`);
    await page.getByRole('heading', { name: 'Flags in production' }).waitFor({ timeout: WAIT_MS });
    await shoot('phone');
    await page.setViewportSize({ width: 1200, height: 860 });

    // 3. The environment switcher, and a flag created from the console.
    await page.getByLabel('Environment').selectOption('development');
    await page.getByRole('heading', { name: 'Flags in development' }).waitFor({ timeout: WAIT_MS });
    check('the environment switcher shows development', (await page.getByText('0 flags').count()) === 1);
    await page.getByLabel('New flag key').fill('new_onboarding');
    await page.getByRole('button', { name: 'Create flag' }).click();
    await page.getByRole('heading', { name: 'new_onboarding' }).waitFor({ timeout: WAIT_MS });
    const created = await flagOf(server, adminToken, 'development', 'new_onboarding');
    check('a flag created from the console is stored, off', created.flag.enabled === false, JSON.stringify(created.flag));

    // 4. The switch: at once in development.
    const devSwitch = page.getByRole('switch', { name: 'new_onboarding enabled in development' });
    await devSwitch.click();
    await page.getByRole('switch', { name: 'new_onboarding enabled in development', checked: true }).waitFor({ timeout: WAIT_MS });
    const ofrep = await api(server, 'POST', '/ofrep/v1/evaluate/flags/new_onboarding', adminToken,
      { context: { targetingKey: 'user_1' } }, { 'X-Guidon-Environment': 'development' });
    check('the switch turns it on, seen through OFREP', ofrep.status === 200 && ofrep.body.value === true, JSON.stringify(ofrep.body));
    // Rules: add, fill, reorder, save; a bad value at its condition.
    await page.getByRole('button', { name: 'Add rule' }).click();
    await page.getByLabel('Rule 1 name').fill('north america');
    await page.getByLabel('Rule 1 condition 1 attribute').fill('country');
    await page.getByLabel('Rule 1 condition 1 operator').selectOption('in');
    await page.getByLabel('Rule 1 condition 1 values').fill('CA, US');
    await page.getByRole('button', { name: 'Add rule' }).click();
    await page.getByLabel('Rule 2 name').fill('new app');
    await page.getByLabel('Rule 2 condition 1 attribute').fill('app_version');
    await page.getByLabel('Rule 2 condition 1 operator').selectOption('semver_gte');
    await page.getByLabel('Rule 2 condition 1 values').fill('not-a-version');
    await page.getByLabel('Rule 2 serves').selectOption('off');
    await page.getByRole('button', { name: 'Move rule 2 up' }).click();
    await page.getByRole('button', { name: 'Save rules' }).click();
    const ruleError = page.locator('#rule-0-c0-values-error');
    await ruleError.filter({ hasText: /semver|version/i }).waitFor({ timeout: WAIT_MS });
    check('a bad condition value is refused at its condition, and nothing is stored',
      await page.getByLabel('Rule 1 condition 1 values').getAttribute('aria-invalid') === 'true'
        && (await flagOf(server, adminToken, 'development', 'new_onboarding')).flag.rules === undefined,
      await ruleError.textContent());
    await page.getByLabel('Rule 1 condition 1 values').fill('2.3.0');
    await page.getByRole('button', { name: 'Save rules' }).click();
    await page.getByRole('heading', { name: 'new_onboarding' }).waitFor({ timeout: WAIT_MS });
    await page.getByText('· version 3').waitFor({ timeout: WAIT_MS });
    const rules = (await flagOf(server, adminToken, 'development', 'new_onboarding')).flag.rules || [];
    check('rules are saved in the order shown, with their operators and values',
      rules.length === 2 && rules[0].name === 'new app' && rules[0].conditions[0].operator === 'semver_gte'
        && rules[0].conditions[0].values[0] === '2.3.0' && rules[0].serve.enabled === false
        && rules[1].conditions[0].operator === 'in' && JSON.stringify(rules[1].conditions[0].values) === '["CA","US"]',
      JSON.stringify(rules));
    const us = await api(server, 'POST', '/api/v1/envs/development/evaluate', adminToken,
      { flag: 'new_onboarding', context: { user_id: 'u1', country: 'US', app_version: '2.0.0' } });
    check('and they decide: a unit in the US on an old app matches "north america"',
      us.body.reason === 'TARGETING_MATCH' && us.body.metadata.rule === 'north america', JSON.stringify(us.body));
    // Compare across environments, and promote (confirmed into production).
    const compareRow = page.locator('#compare').getByRole('row').filter({ hasText: 'production' });
    await compareRow.filter({ hasText: 'creates it' }).waitFor({ timeout: WAIT_MS });
    await compareRow.getByRole('button', { name: 'Promote to production' }).click();
    await page.getByRole('dialog', { name: 'Promote new_onboarding to production?' }).getByRole('button', { name: 'Promote' }).click();
    await compareRow.filter({ hasText: 'nothing: the same' }).waitFor({ timeout: WAIT_MS });
    const promoted = await api(server, 'GET', '/api/v1/envs/production/flags/new_onboarding', adminToken);
    check('a flag compared across environments and promoted to production',
      promoted.status === 200 && (promoted.body.flag.rules || []).length === 2, JSON.stringify(promoted.body).slice(0, 200));
    await audit('flag');
    await shoot('rules');

    // In production, after a confirmation.
    await page.goto(`${server}/#/env/production/flags/dark_mode`);
    const prodSwitch = page.getByRole('switch', { name: 'dark_mode enabled in production' });
    await prodSwitch.click();
    const dialog = page.getByRole('dialog', { name: 'Turn dark_mode on in production?' });
    await dialog.waitFor({ timeout: WAIT_MS });
    await audit('confirmation');
    await shoot('confirm', false); // a modal's backdrop covers the viewport only
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
    check('cancelling the confirmation changes nothing', (await flagOf(server, adminToken, 'production', 'dark_mode')).flag.enabled === false);
    await prodSwitch.click();
    await dialog.getByRole('button', { name: 'Turn on' }).click();
    await page.getByRole('switch', { name: 'dark_mode enabled in production', checked: true }).waitFor({ timeout: WAIT_MS });
    const darkNow = await flagOf(server, adminToken, 'production', 'dark_mode');
    check('confirmed in production, the flag is on', darkNow.flag.enabled === true);
    const history = await api(server, 'GET', '/api/v1/envs/production/flags/dark_mode/history', adminToken);
    check('the change is recorded as the person\'s', history.body.history.at(-1).actor === 'user:admin', history.body.history.at(-1).actor);
    const t1 = performance.now();
    await api(server, 'PATCH', '/api/v1/envs/production/flags/dark_mode', adminToken,
      { enabled: false }, { 'Content-Type': 'application/merge-patch+json' });
    await page.getByRole('switch', { name: 'dark_mode enabled in production', checked: false }).waitFor({ timeout: WAIT_MS });
    check('an open flag page follows a change made elsewhere',
      await page.getByRole('status').filter({ hasText: 'token admin-from-env changed dark_mode: turned off (was on)' }).count() === 1,
      `${Math.round(performance.now() - t1)} ms (reported, not asserted)`);

    // 5. The rollout slider; an invalid percentage at its field.
    await page.goto(`${server}/#/env/production/flags/search_v2`);
    const slider = page.getByRole('slider', { name: 'Rollout slider' });
    await slider.waitFor({ timeout: WAIT_MS });
    await slider.focus();
    for (let i = 0; i < 25; i++) await page.keyboard.press('ArrowLeft'); // 50 → 25, by keyboard
    check('the slider moves the percentage with the keyboard', await page.getByLabel('Rollout percentage').inputValue() === '25');
    await page.getByRole('button', { name: 'Save rollout' }).click();
    await page.getByText('25 % of units').waitFor({ timeout: WAIT_MS });
    check('the rollout is saved', (await flagOf(server, adminToken, 'production', 'search_v2')).flag.rollout.percentage === 25);
    await page.getByLabel('Rollout percentage').fill('150');
    await page.getByRole('button', { name: 'Save rollout' }).click();
    const fieldError = page.locator('#rollout-error');
    await fieldError.filter({ hasText: 'out of range' }).waitFor({ timeout: WAIT_MS });
    const invalid = await page.getByLabel('Rollout percentage').getAttribute('aria-invalid');
    const describedBy = await page.getByLabel('Rollout percentage').getAttribute('aria-describedby');
    check('a 422 is shown at the rollout field, which is marked invalid, and nothing is stored',
      invalid === 'true' && describedBy === 'rollout-error'
        && (await flagOf(server, adminToken, 'production', 'search_v2')).flag.rollout.percentage === 25,
      await fieldError.textContent());
    await shoot('field-error');

    // 6. A concurrent change: kept, shown, applied on top.
    await page.goto(`${server}/#/env/production/flags/search_v2`);
    await page.getByLabel('Rollout percentage').waitFor({ timeout: WAIT_MS });
    await page.getByLabel('Rollout percentage').fill('30');
    await api(server, 'PATCH', '/api/v1/envs/production/flags/search_v2', adminToken,
      { rollout: { percentage: 40 }, description: 'Search, rolled out by the pipeline' }, { 'Content-Type': 'application/merge-patch+json' });
    const liveNotice = page.locator('#live-notice');
    await liveNotice.waitFor({ timeout: WAIT_MS });
    check('a change made elsewhere while editing is announced, and the edit stays',
      /token admin-from-env changed this flag while you were editing/.test(await liveNotice.innerText())
        && await page.getByLabel('Rollout percentage').inputValue() === '30', (await liveNotice.innerText()).replace(/\s+/g, ' '));
    await page.getByRole('button', { name: 'Save rollout' }).click();
    const panel = page.locator('#conflict');
    await panel.waitFor({ timeout: WAIT_MS });
    const panelText = (await panel.innerText()).replace(/\s+/g, ' ');
    check('a 412 shows who changed what meanwhile, and the edit it kept',
      /token admin-from-env/.test(panelText) && /rollout 40 % \(was 25 %\)/.test(panelText)
        && /Search, rolled out by the pipeline/.test(panelText) && /rollout 30 %/.test(panelText)
        && await page.getByLabel('Rollout percentage').inputValue() === '30', panelText);
    await audit('conflict');
    await shoot('conflict');
    await panel.getByRole('button', { name: 'Apply my change on top' }).click();
    await page.getByText('30 % of units').waitFor({ timeout: WAIT_MS });
    const merged = (await flagOf(server, adminToken, 'production', 'search_v2')).flag;
    check('applied on top: my rollout, their description', merged.rollout.percentage === 30
      && merged.description === 'Search, rolled out by the pipeline', JSON.stringify(merged));

    // History: what each version changed, and revert (confirmed in production).
    const historyText = (await page.locator('#history').innerText()).replace(/\s+/g, ' ');
    check('the history says who changed what in each version',
      /version 4 by admin, just now: rollout 30 % \(was 40 %\)/.test(historyText)
        && /version 1 by token admin-from-env, just now: created/.test(historyText), historyText.slice(0, 300));
    await page.getByRole('button', { name: 'Revert to version 1' }).click();
    const revertDialog = page.getByRole('dialog', { name: 'Revert search_v2 to version 1 in production?' });
    await revertDialog.getByRole('button', { name: 'Revert' }).click();
    await page.getByText('50 % of units').waitFor({ timeout: WAIT_MS });
    const reverted = (await flagOf(server, adminToken, 'production', 'search_v2')).flag;
    check('revert from the history restores version 1', reverted.rollout.percentage === 50
      && reverted.description === 'Search backed by the new index', JSON.stringify(reverted));
    await audit('history');
    await shoot('history');

    // The environment's audit log.
    await page.getByRole('link', { name: '← Flags in production' }).click();
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByRole('heading', { name: 'Audit log of production' }).waitFor({ timeout: WAIT_MS });
    const firstEntry = (await page.getByRole('row').nth(1).innerText()).replace(/\s+/g, ' ');
    check('the audit log shows the newest change first, with who and what',
      /admin flag search_v2 v5 .*rollout 50 % \(was 30 %\)/.test(firstEntry), firstEntry);
    await audit('audit log');
    await shoot('audit');

    // Sign out.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to Guidon' }).waitFor({ timeout: WAIT_MS });
    check('signing out returns to the sign-in page', true);

    // 7. A viewer.
    const viewerContext = await browser.newContext();
    const viewer = await viewerContext.newPage();
    viewer.on('pageerror', (e) => errors.push(e.message));
    await viewer.goto(server + '/');
    await viewer.getByLabel('User').fill('val');
    await viewer.getByLabel('Password').fill(VIEWER_PASSWORD);
    await viewer.getByRole('button', { name: 'Sign in' }).click();
    await viewer.getByRole('heading', { name: 'Flags in production' }).waitFor({ timeout: WAIT_MS });
    const envOptions = await viewer.getByLabel('Environment').locator('option').allTextContents();
    check('a viewer sees only the environments they have a role in', JSON.stringify(envOptions) === '["production"]', JSON.stringify(envOptions));
    check('a viewer gets no "Create flag"', await viewer.getByRole('button', { name: 'Create flag' }).count() === 0);
    await viewer.goto(`${server}/#/env/production/flags/search_v2`);
    await viewer.getByRole('heading', { name: 'search_v2' }).waitFor({ timeout: WAIT_MS });
    // A viewer may explain (a question, not a change); nothing else.
    const inMain = viewer.locator('main');
    const controls = await inMain.getByRole('switch').count()
      + await inMain.getByRole('slider').count()
      + await inMain.getByRole('spinbutton').count()
      + await inMain.getByRole('button', { name: /Save|Revert|Create|Apply/ }).count()
      + await inMain.getByRole('textbox', { name: 'Description' }).count();
    check('a viewer sees the flag and no control to change it (explaining stays)', controls === 0
      && await inMain.getByRole('button', { name: 'Explain' }).count() === 1
      && (await viewer.locator('#rollout-value').textContent()) === '50 %', `${controls} controls`);
    const refused = await viewer.evaluate(async () => {
      const session = await (await fetch('/api/v1/session')).json();
      const r = await fetch('/api/v1/envs/production/flags/search_v2', {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/merge-patch+json', 'X-CSRF-Token': session.csrf_token },
        body: JSON.stringify({ enabled: false }),
      });
      return { status: r.status, body: await r.json() };
    });
    check('the API refuses a viewer\'s write, CSRF token or not', refused.status === 403, JSON.stringify(refused.body));
    await viewerContext.close();

    check('every control of every screen has an accessible name', unnamed.length === 0 && audited > 20,
      `${audited} controls on ${screens} screens${unnamed.length ? `; unnamed: ${unnamed.join('; ')}` : ''}`);
    check('the console logged no error (a CSP violation would be one)', errors.length === 0, errors.join(' | '));
  } finally {
    if (browser) await browser.close();
    if (guidon) {
      await stopGuidon(guidon.child);
      if (failed) console.log(`guidon's log:\n${guidon.log()}`);
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

const { values: args } = parseArgs({
  options: {
    guidon: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    screenshots: { type: 'string' },
  },
});
if (!args.guidon) {
  console.error('usage: node e2e.mjs --guidon PATH/TO/guidon [--chromium PATH] [--screenshots DIR]');
  process.exit(2);
}
if (args.screenshots) mkdirSync(args.screenshots, { recursive: true });
const timer = setTimeout(() => { console.log('FAIL  the run did not end in time'); process.exit(1); }, RUN_MS);
try {
  await run(args);
} catch (e) {
  console.log(`${e instanceof SetupError ? 'SETUP' : 'FAIL '} ${e.stack || e.message}`);
  process.exit(e instanceof SetupError ? 2 : 1);
} finally {
  clearTimeout(timer);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
