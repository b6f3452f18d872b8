#!/usr/bin/env node
// End-to-end: the stock OpenFeature web SDK with its OFREP web provider
// (npm, pinned in package-lock.json; nobody here wrote them) in a real
// headless Chromium, against a real `guidon serve`.
//
// 1. Two static servers on 127.0.0.1:0 serve the same test page (page.js,
//    bundled with esbuild): one origin is allowed by the server's
//    --cors-origin, the other is not. Both differ from the server's origin.
// 2. `guidon serve` starts on 127.0.0.1:0 with --cors-origin for the first;
//    flags (and a segment) are written through the admin API, and a
//    `client` token (the browser-safe role) is created.
// 3. In Chromium, the allowed page resolves boolean, string, number, object
//    and disabled flags through the SDK; every answer is checked.
// 4. The test changes a flag through the admin API, several times; the page
//    must see each change through OFREP eventStreams (the provider polls
//    never: pollInterval 0, no visibility refresh), and the latency from the
//    write to the page's ConfigurationChanged is measured and printed. The
//    event stream's message (its id, the new revision) is observed through
//    the DevTools protocol, and the page's re-fetch must follow it.
// 5. Nothing the page received names a rule's values or a segment; the
//    page cannot read definition routes; the page of the other origin is
//    refused by CORS (and the server did answer it, without CORS headers).
//
// Every check prints one line (PASS/FAIL). Exit status: 0 when every check
// passed, 1 otherwise, 2 when the setup itself failed.
//
// Usage: node e2e.mjs --guidon PATH/TO/guidon [--chromium PATH] [--updates N] [--verbose]

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { isDeepStrictEqual } from 'node:util';

import * as esbuild from 'esbuild';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const ENV = 'web';
const now = () => performance.timeOrigin + performance.now();
// How long to wait for anything that should happen (a server to start, a
// change to reach the page). Not a performance bound: a change that has
// not arrived by then is a failure to deliver it.
const WAIT_MS = 10_000;
// The whole run, start to end: past it the run stops (and cleans up) with
// a failure.
const RUN_MS = 180_000;
// The issue's target for a change to reach the page; reported, not asserted
// (the team measures performance, it does not assert wall-clock limits).
const TARGET_MS = 1000;

// Markers that appear only in definitions (a rule's values, a segment's key
// and members): a page must never receive them.
const SECRET_VALUE = `@internal-${randomBytes(4).toString('hex')}.example`;
const SECRET_SEGMENT = `staff-${randomBytes(4).toString('hex')}`;
const SECRET_MEMBER = `member-${randomBytes(4).toString('hex')}`;
const SECRETS = [SECRET_VALUE, SECRET_SEGMENT, SECRET_MEMBER];

const STRING_VARIANTS = (winner) => [
  { key: 'blue', weight: winner === 'blue' ? 100 : 0, value: '#1e40af' },
  { key: 'green', weight: winner === 'green' ? 100 : 0, value: '#15803d' },
];
const COLOURS = { blue: '#1e40af', green: '#15803d' };

const SEGMENT = {
  description: 'ofrep-web e2e: a segment the page must never see',
  attribute: 'user_id',
  included: [SECRET_MEMBER],
};

// Weights of 100/0 make the served variant independent of the hash.
const FLAGS = {
  'web-boolean': { description: 'ofrep-web e2e: boolean', enabled: true },
  'web-string': {
    description: 'ofrep-web e2e: string variants (the test flips it)',
    enabled: true,
    variants: STRING_VARIANTS('blue'),
  },
  'web-number': {
    description: 'ofrep-web e2e: number variants',
    enabled: true,
    variants: [
      { key: 'ten', weight: 100, value: 10 },
      { key: 'fifty', weight: 0, value: 50 },
    ],
  },
  'web-object': {
    description: 'ofrep-web e2e: object variant',
    enabled: true,
    variants: [
      { key: 'single_page', weight: 100, value: { layout: 'single_page', steps: 1, express: true } },
      { key: 'classic', weight: 0, value: { layout: 'classic', steps: 3 } },
    ],
  },
  // Rules whose values (and the segment they name) must stay on the
  // server: the page's user matches none of them.
  'web-targeted': {
    description: 'ofrep-web e2e: targeting the page must not learn',
    enabled: true,
    variants: [
      { key: 'standard', weight: 100, value: 'Welcome' },
      { key: 'staff', weight: 0, value: 'Hello, colleague' },
    ],
    rules: [
      {
        name: 'staff by email',
        conditions: [{ attribute: 'email', operator: 'ends_with', values: [SECRET_VALUE] }],
        serve: { enabled: true, variant: 'staff' },
      },
      {
        name: 'staff by segment',
        conditions: [{ operator: 'in_segment', values: [SECRET_SEGMENT] }],
        serve: { enabled: true, variant: 'staff' },
      },
    ],
  },
  // Disabled with no off_variant: Guidon sends no value (OFREP's
  // codeDefaultFlag), the SDK must serve the code default, reason DISABLED.
  'web-disabled': {
    description: 'ofrep-web e2e: disabled flag without an off variant',
    enabled: false,
    variants: [{ key: 'on', weight: 100, value: 'served only when enabled' }],
  },
};

// [SDK method, flag, default]: what the page resolves.
const WATCH = [['getStringValue', 'web-string', 'code default']];

class SetupError extends Error {}

// ---------------------------------------------------------------- output

let passed = 0;
let failed = 0;
function check(name, ok, summary, problems = []) {
  if (ok && problems.length === 0) {
    passed++;
    console.log(`PASS  ${name}${summary ? `: ${summary}` : ''}`);
  } else {
    failed++;
    console.log(`FAIL  ${name}${summary ? `: ${summary}` : ''}`);
    for (const p of problems) console.log(`        ${p}`);
  }
}
const show = (v) => JSON.stringify(v);
// The event stream's URL carries a credential (the channel): never print it.
const redact = (s) => String(s).replace(/channel=[0-9a-f]+/g, 'channel=<redacted>');

// Whether `pred` holds within `ms` (checked every 20 ms).
async function until(pred, ms = WAIT_MS) {
  const deadline = now() + ms;
  for (;;) {
    if (pred()) return true;
    if (now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

// Whether the browser logs a line that `pred` accepts (it may log it just
// after the page's promise settled).
const consoleSays = (lines, pred) => until(() => lines.some(pred), 2000);

// ---------------------------------------------------------------- HTTP

async function api(server, method, path, token, body, extraHeaders = {}) {
  let response;
  try {
    response = await fetch(`${server}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${token}`,
        Accept: 'application/json',
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...extraHeaders,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(WAIT_MS),
    });
  } catch (e) {
    throw new SetupError(`${method} ${path}: ${e.message}`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: response.status, headers: response.headers, body: json };
}

function expectStatus(what, answer, ...allowed) {
  if (!allowed.includes(answer.status)) {
    throw new SetupError(`${what}: HTTP ${answer.status} (expected ${allowed.join(' or ')}): ${show(answer.body)}`);
  }
  return answer.body;
}

// The test page and its bundle, from any number of origins.
function staticServer(bundle) {
  const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Guidon OFREP web e2e</title></head>
<body><p>Guidon OFREP web e2e</p><script src="/bundle.js"></script></body></html>`;
  const server = http.createServer((req, res) => {
    if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(page);
    } else if (req.url === '/bundle.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
      res.end(bundle);
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({ server, origin: `http://127.0.0.1:${server.address().port}` });
    });
  });
}

// `guidon serve` on port 0: the kernel picks the port, the server prints
// "guidon: listening on http://ADDR".
function startGuidon(binary, dir, adminToken, corsOrigin) {
  const child = spawn(
    binary,
    ['serve', '--listen', '127.0.0.1:0', '--database-url', `sqlite://${join(dir, 'guidon.db')}`,
      '--cors-origin', corsOrigin],
    {
      env: { ...process.env, GUIDON_ADMIN_TOKEN: adminToken, GUIDON_LOG: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let log = '';
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new SetupError(`guidon serve did not print its address within ${WAIT_MS} ms`)), WAIT_MS);
    const onData = (chunk) => {
      log += chunk;
      const m = log.match(/^guidon: listening on (http:\/\/\S+)$/m);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new SetupError(`cannot start ${binary}: ${e.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new SetupError(`guidon serve exited before listening (code ${code}, signal ${signal})`));
    });
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

async function setup(server, adminToken) {
  expectStatus(`create environment ${ENV}`, await api(server, 'POST', '/api/v1/envs', adminToken, { name: ENV }), 201, 409);
  expectStatus(`PUT segment ${SECRET_SEGMENT}`,
    await api(server, 'PUT', `/api/v1/envs/${ENV}/segments/${SECRET_SEGMENT}`, adminToken, SEGMENT), 200, 201);
  const versions = {};
  for (const [key, flag] of Object.entries(FLAGS)) {
    const body = expectStatus(`PUT flag ${key}`,
      await api(server, 'PUT', `/api/v1/envs/${ENV}/flags/${key}`, adminToken, flag), 200, 201);
    versions[key] = body.version;
  }
  const name = `ofrep-web-e2e-${process.pid}-${randomBytes(3).toString('hex')}`;
  const token = expectStatus('create client token',
    await api(server, 'POST', '/api/v1/tokens', adminToken, { name, role: 'client', env: ENV }), 201);
  console.log(`setup: ${Object.keys(FLAGS).length} flags and a segment in ${ENV}, client token ${show(name)}`);
  return { clientToken: token.token, versions };
}

// ---------------------------------------------------------------- checks

function checkDetails(name, got, want) {
  const problems = [];
  for (const field of ['value', 'variant', 'reason', 'errorCode']) {
    if (!isDeepStrictEqual(got[field], want[field])) {
      problems.push(`${field}: expected ${show(want[field])}, got ${show(got[field])}`);
    }
  }
  for (const [k, v] of Object.entries(want.flagMetadata ?? {})) {
    if (!isDeepStrictEqual(got.flagMetadata?.[k], v)) {
      problems.push(`flagMetadata.${k}: expected ${show(v)}, got ${show(got.flagMetadata?.[k])}`);
    }
  }
  if (problems.length && got.errorMessage) problems.push(`SDK error message: ${show(got.errorMessage)}`);
  check(name, true, `value=${show(got.value)} variant=${show(got.variant)} reason=${got.reason} errorCode=${got.errorCode}`, problems);
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      guidon: { type: 'string' },
      chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
      updates: { type: 'string', default: '5' },
      verbose: { type: 'boolean', default: false },
    },
  });
  if (!args.guidon) throw new SetupError('--guidon PATH is required');
  const updates = Number.parseInt(args.updates, 10);
  if (!(updates >= 1)) throw new SetupError(`--updates must be a positive integer, got ${show(args.updates)}`);

  const bundle = await esbuild.build({
    entryPoints: [join(here, 'page.js')],
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: 'chrome120',
    logLevel: 'silent',
  });
  const bundleText = bundle.outputFiles[0].text;

  const dir = mkdtempSync(join(tmpdir(), 'ofrep-web-'));
  const cleanups = [() => rmSync(dir, { recursive: true, force: true })];
  let guidon;
  let broken = false;
  try {
    const allowed = await staticServer(bundleText);
    cleanups.unshift(() => allowed.server.close());
    const refused = await staticServer(bundleText);
    cleanups.unshift(() => refused.server.close());

    const adminToken = `e2e-admin-${randomBytes(16).toString('hex')}`;
    guidon = startGuidon(args.guidon, dir, adminToken, allowed.origin);
    // Stopped by a signal, or exiting any way at all: no server left behind.
    const child = guidon.child;
    process.on('exit', () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    });
    cleanups.unshift(() => stopGuidon(guidon.child));
    const server = await guidon.url;
    expectStatus('/healthz', await api(server, 'GET', '/healthz', adminToken), 200);
    const { clientToken, versions } = await setup(server, adminToken);

    const browser = await chromium.launch({ executablePath: args.chromium, headless: true, timeout: 60_000 });
    cleanups.unshift(() => browser.close());
    console.log(`ofrep-web: guidon serve at ${server}; page at ${allowed.origin} (allowed by --cors-origin), ` +
      `${refused.origin} (not allowed); Chromium ${browser.version()}`);

    let timer;
    const overdue = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the run took longer than ${RUN_MS} ms: stopped`)), RUN_MS);
    });
    try {
      await Promise.race([overdue, (async () => {
        await allowedPage({ browser, server, origin: allowed.origin, clientToken, adminToken, versions, updates, verbose: args.verbose });
        await refusedPage({ browser, server, origin: refused.origin, clientToken, verbose: args.verbose });
        await definitionsRefused({ server, origin: allowed.origin, clientToken });
      })()]);
    } finally {
      clearTimeout(timer);
    }
  } catch (e) {
    broken = true;
    throw e;
  } finally {
    if ((failed || broken) && guidon && guidon.log().trim()) {
      console.log('---- guidon serve output ----');
      console.log(guidon.log().trimEnd());
      console.log('-----------------------------');
    }
    for (const c of cleanups) {
      try {
        await c();
      } catch {
        // cleanup is best effort
      }
    }
  }
}

// The allowed page: resolution, the push through eventStreams, no leak.
async function allowedPage({ browser, server, origin, clientToken, adminToken, versions, updates, verbose }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => {
    consoleLines.push(`${m.type()}: ${m.text()}`);
    if (verbose) console.log(`page console ${m.type()}: ${redact(m.text())}`);
  });
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));

  // Every answer from the server the page read (the event stream's body is
  // never complete, so it is observed through the DevTools protocol below).
  const received = [];
  const bulkRequests = [];
  const streams = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(server)) return;
    if (r.method() === 'POST' && new URL(r.url()).pathname === '/ofrep/v1/evaluate/flags') {
      bulkRequests.push({ at: now() });
    }
    if (r.resourceType() === 'eventsource') streams.push(r.url());
  });
  page.on('response', async (r) => {
    if (!r.url().startsWith(server) || r.request().resourceType() === 'eventsource') return;
    try {
      received.push({ url: r.url(), status: r.status(), body: await r.text() });
    } catch {
      // a preflight or a body already gone
    }
  });
  const sse = [];
  const cdp = await context.newCDPSession(page);
  cdp.on('Network.eventSourceMessageReceived', (m) => sse.push({ at: now(), id: m.eventId, data: m.data }));
  await cdp.send('Network.enable');

  await page.goto(`${origin}/`);
  const status = await page.evaluate(
    (o) => window.guidonTest.start(o),
    { baseUrl: server, token: clientToken, context: { targetingKey: 'user-1', country: 'FR' }, watch: WATCH },
  ).catch((e) => ({ error: e.message }));
  check('provider ready on an allowed origin', status === 'READY', `status ${show(status)}`,
    status === 'READY' ? [] : consoleLines.slice(-10).map(redact));
  if (status !== 'READY') return;

  // 1. Resolution through the SDK.
  const meta = (key) => ({ flag_version: versions[key] });
  const cases = [
    ['boolean flag', ['getBooleanDetails', 'web-boolean', false],
      { value: true, variant: 'on', reason: 'STATIC', errorCode: null, flagMetadata: meta('web-boolean') }],
    ['string flag (variant)', ['getStringDetails', 'web-string', 'code default'],
      { value: '#1e40af', variant: 'blue', reason: 'SPLIT', errorCode: null, flagMetadata: meta('web-string') }],
    ['number flag', ['getNumberDetails', 'web-number', -1],
      { value: 10, variant: 'ten', reason: 'SPLIT', errorCode: null, flagMetadata: meta('web-number') }],
    ['object flag', ['getObjectDetails', 'web-object', { layout: 'code default' }],
      { value: { layout: 'single_page', steps: 1, express: true }, variant: 'single_page', reason: 'SPLIT', errorCode: null, flagMetadata: meta('web-object') }],
    ['targeted flag, no rule matches', ['getStringDetails', 'web-targeted', 'code default'],
      { value: 'Welcome', variant: 'standard', reason: 'SPLIT', errorCode: null, flagMetadata: meta('web-targeted') }],
    ['disabled flag: the code default, reason DISABLED', ['getStringDetails', 'web-disabled', 'code default'],
      { value: 'code default', variant: 'off', reason: 'DISABLED', errorCode: null, flagMetadata: meta('web-disabled') }],
    ['unknown flag: FLAG_NOT_FOUND', ['getBooleanDetails', 'web-no-such-flag', true],
      { value: true, variant: null, reason: 'ERROR', errorCode: 'FLAG_NOT_FOUND' }],
  ];
  const got = await page.evaluate((c) => window.guidonTest.resolve(c), cases.map((c) => c[1]));
  cases.forEach(([name, , want], i) => checkDetails(name, got[i], want));

  // 2. The bulk answer named the event stream, and the page follows it.
  const isBulk = (r) => new URL(r.url).pathname === '/ofrep/v1/evaluate/flags' && r.status === 200;
  await until(() => received.some(isBulk));
  const bulk = received.find(isBulk);
  let eventStreams = null;
  try {
    eventStreams = JSON.parse(bulk?.body ?? 'null')?.eventStreams ?? null;
  } catch {
    eventStreams = null;
  }
  check('bulk answer carries eventStreams (sse)',
    Array.isArray(eventStreams) && eventStreams.some((s) => s.type === 'sse'),
    redact(show(eventStreams)));
  // Give the EventSource a moment to be opened (it is opened right after
  // the first bulk answer), then require it.
  await until(() => streams.length > 0);
  check('page opened the OFREP event stream on the server\'s origin',
    streams.length >= 1 && streams.every((u) => new URL(u).pathname === '/ofrep/v1/events' && u.startsWith(server)),
    streams.map(redact).join(', ') || 'no EventSource request');

  // 3. Changes pushed through the event stream.
  const latencies = [];
  const streamLatencies = [];
  let winner = 'blue';
  for (let i = 1; i <= updates; i++) {
    winner = winner === 'blue' ? 'green' : 'blue';
    const changesBefore = await page.evaluate(() => window.guidonTest.changes.length);
    const bulkBefore = bulkRequests.length;
    // Let the stream settle between changes (the provider debounces events).
    await new Promise((r) => setTimeout(r, 200));
    const t0 = now();
    const write = await api(server, 'PUT', `/api/v1/envs/${ENV}/flags/web-string`, adminToken,
      { ...FLAGS['web-string'], variants: STRING_VARIANTS(winner) });
    const tAnswered = now();
    if (write.status !== 200) {
      check(`change ${i}: write accepted`, false, `HTTP ${write.status} ${show(write.body)}`);
      break;
    }
    const revision = write.body.revision;
    const want = COLOURS[winner];
    const seen = await page.waitForFunction(
      ([n, v]) => window.guidonTest.changes.slice(n).find((c) => c.values['web-string'] === v) ?? false,
      [changesBefore, want],
      { timeout: WAIT_MS, polling: 10 },
    ).then((h) => h.jsonValue()).catch(() => null);
    if (!seen) {
      check(`change ${i} (web-string -> ${winner}) reaches the page`, false,
        `not seen within ${WAIT_MS} ms`,
        [`event stream messages: ${show(sse.map((m) => m.id))}`, `bulk re-fetches since the write: ${bulkRequests.length - bulkBefore}`,
          ...consoleLines.slice(-10).map(redact)]);
      break;
    }
    const event = sse.find((m) => m.id === String(revision));
    const refetch = bulkRequests.slice(bulkBefore);
    const problems = [];
    if (!event) problems.push(`no event stream message with id ${revision} (the write's revision); got ids ${show(sse.map((m) => m.id))}`);
    else if (event.data !== '{"type":"refetchEvaluation"}') problems.push(`event data ${show(event.data)}`);
    if (refetch.length === 0) problems.push('the page did not re-fetch');
    if (event && refetch.length && refetch[0].at < event.at) problems.push('the re-fetch came before the event stream message');
    const latency = seen.at - t0;
    if (problems.length === 0) {
      latencies.push(latency);
      streamLatencies.push(event.at - t0);
    }
    check(`change ${i} (web-string -> ${winner}) pushed through eventStreams`, true,
      `write→page ${latency.toFixed(1)} ms (write answered after ${(tAnswered - t0).toFixed(1)} ms, ` +
      (event ? `event id ${revision} at +${(event.at - t0).toFixed(1)} ms` : 'no event') +
      `, ${refetch.length} re-fetch)`,
      problems);
  }
  // No re-fetch but the first came without an event stream message before
  // it (since the previous re-fetch): nothing polled.
  const unprompted = bulkRequests.slice(1).filter((r, i) =>
    !sse.some((m) => m.at > bulkRequests[i].at && m.at <= r.at));
  check('every re-fetch followed an event stream message (nothing polled)',
    bulkRequests.length > 1 && unprompted.length === 0,
    `${bulkRequests.length} bulk requests, ${sse.length} stream messages`,
    unprompted.length ? [`${unprompted.length} re-fetches with no event before them`] : []);
  if (latencies.length) {
    const stats = (xs) => {
      const sorted = [...xs].sort((a, b) => a - b);
      const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1);
      return { text: `min ${at(0)} ms, median ${at(0.5)} ms, max ${at(1)} ms`, max: sorted[sorted.length - 1] };
    };
    const page = stats(latencies);
    console.log(`ofrep-web: push latency over ${latencies.length} changes, admin write sent → ` +
      `page's ConfigurationChanged with the new value: ${page.text} ` +
      `(target < ${TARGET_MS} ms: ${page.max < TARGET_MS ? 'met' : 'NOT met'}); ` +
      `→ the event stream's message in Chromium: ${stats(streamLatencies).text} ` +
      `(the provider then waits its 50 ms debounce and re-fetches)`);
  }

  // 4. Nothing of the definitions reached the page.
  const cache = await page.evaluate(() => window.guidonTest.cache());
  const texts = [...received.map((r) => r.body), JSON.stringify(cache), ...sse.map((m) => m.data), await page.content()];
  const leaks = SECRETS.filter((s) => texts.some((t) => t.includes(s)));
  check('no rule value or segment reached the page', leaks.length === 0 && received.length > 0,
    `${received.length} answers, ${sse.length} stream messages and the provider's cache searched`,
    leaks.map((s) => `found ${show(s)}`));
  const cacheProblems = Object.entries(cache ?? {})
    .filter(([, v]) => v && typeof v === 'object' && ('rules' in v || 'variants' in v || 'conditions' in v))
    .map(([k]) => `${k} carries a definition`);
  check('the provider holds results only', cache !== null && cacheProblems.length === 0,
    `flags ${Object.keys(cache ?? {}).sort().join(', ')}`, cacheProblems);

  // The page itself trying definition routes with its token: the browser
  // refuses to let it read them (no CORS on definition routes).
  for (const path of ['/api/v1/sdk/flags', `/api/v1/envs/${ENV}/flags`, `/api/v1/envs/${ENV}/segments`]) {
    const r = await page.evaluate(([u, t]) => window.guidonTest.tryFetch(u, { headers: { Authorization: `Bearer ${t}` } }),
      [`${server}${path}`, clientToken]);
    const blocked = await consoleSays(consoleLines, (l) => l.includes('CORS policy') && l.includes(path));
    check(`page cannot read ${path} (CORS)`, !r.ok && blocked,
      r.ok ? `read HTTP ${r.status}: ${r.body.slice(0, 200)}` : `${r.error}; browser: ${blocked ? 'blocked by CORS policy' : 'no CORS message'}`);
  }
  await context.close();
}

// A page of an origin not in --cors-origin: the browser refuses it.
async function refusedPage({ browser, server, origin, clientToken, verbose }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => {
    consoleLines.push(m.text());
    if (verbose) console.log(`refused page console ${m.type()}: ${redact(m.text())}`);
  });
  await page.goto(`${origin}/`);
  const r = await page.evaluate(([u, t]) => window.guidonTest.tryFetch(u, {
    method: 'POST',
    headers: { Authorization: `Bearer ${t}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ context: { targetingKey: 'user-1' } }),
  }), [`${server}/ofrep/v1/evaluate/flags`, clientToken]);
  const blocked = await consoleSays(consoleLines, (l) => l.includes('CORS policy') && l.includes('/ofrep/v1/evaluate/flags'));
  check('page of a non-allowed origin cannot call OFREP', !r.ok && blocked,
    r.ok ? `read HTTP ${r.status}` : `${r.error}; browser: ${blocked ? 'blocked by CORS policy' : 'no CORS message'}`,
    blocked ? [] : consoleLines.slice(-5).map(redact));

  const status = await page.evaluate(
    (o) => window.guidonTest.start(o),
    { baseUrl: server, token: clientToken, context: { targetingKey: 'user-1' }, watch: WATCH },
  ).then((s) => `status ${s}`, (e) => `error: ${e.message.split('\n')[0]}`);
  const values = await page.evaluate(() => window.guidonTest.resolve([['getStringDetails', 'web-string', 'code default']]));
  check('stock provider on a non-allowed origin gets no flag', values[0].value === 'code default' && values[0].reason === 'ERROR',
    `${status}; web-string: value=${show(values[0].value)} reason=${values[0].reason} errorCode=${values[0].errorCode}`);
  await context.close();

  // The server did answer that origin, just without CORS: the refusal is
  // CORS, not a server that is down.
  const preflight = await fetch(`${server}/ofrep/v1/evaluate/flags`, {
    method: 'OPTIONS',
    headers: { Origin: origin, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type' },
  });
  const corsHeaders = [...preflight.headers.keys()].filter((h) => h.startsWith('access-control-'));
  check('preflight from a non-allowed origin: no CORS header', corsHeaders.length === 0,
    `HTTP ${preflight.status}, CORS headers: ${show(corsHeaders)}`);
}

// The client token on definition routes, from the allowed origin: 403 and
// no CORS header.
async function definitionsRefused({ server, origin, clientToken }) {
  for (const path of ['/api/v1/sdk/flags', `/api/v1/envs/${ENV}/flags`, `/api/v1/envs/${ENV}/segments/${SECRET_SEGMENT}`]) {
    const r = await api(server, 'GET', path, clientToken, undefined, { Origin: origin });
    const acao = r.headers.get('access-control-allow-origin');
    const leaked = SECRETS.some((s) => JSON.stringify(r.body ?? '').includes(s));
    check(`client token on ${path}: 403`, r.status === 403 && acao === null && !leaked,
      `HTTP ${r.status}, Access-Control-Allow-Origin ${show(acao)}, body ${show(r.body)}`);
  }
}

for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.once(sig, () => {
    console.error(`ofrep-web e2e: ${sig}: stopped`);
    process.exit(code);
  });
}
try {
  await main();
} catch (e) {
  if (e instanceof SetupError) {
    console.error(`ofrep-web e2e: setup failed: ${redact(e.message)}`);
    process.exit(2);
  }
  console.error(`ofrep-web e2e: ${redact(e.stack ?? e)}`);
  process.exit(2);
}
console.log(`ofrep-web e2e: ${passed}/${passed + failed} checks passed${failed ? `, ${failed} FAILED` : ''}`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
