#!/usr/bin/env node
// The console's first load, measured (BENCHMARKS.md): an environment of N
// flags (1,000 and 10,000 by default, imported in one bulk write), a signed-in
// browser, and the time from navigating to the list until its rows are
// drawn (the "N flags" count shown and the first rows in the table), and
// the time a search takes to redraw. Prints the median and the spread of
// several runs. Nothing is asserted: these are figures.
//
// Usage: node load.mjs --guidon PATH/TO/guidon [--chromium PATH] [--sizes 1000,10000] [--runs 7]

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir, cpus } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const { chromium } = createRequire(join(here, '..', 'ofrep-web', 'package.json'))('playwright-core');
const PASSWORD = `bench-${randomBytes(6).toString('hex')}`;

const { values: args } = parseArgs({
  options: {
    guidon: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    sizes: { type: 'string', default: '1000,10000' },
    runs: { type: 'string', default: '7' },
  },
});
if (!args.guidon) {
  console.error('usage: node load.mjs --guidon PATH/TO/guidon [--chromium PATH] [--sizes 1000,10000] [--runs 7]');
  process.exit(2);
}

function flags(n) {
  return Array.from({ length: n }, (_, i) => ({
    key: `flag_${String(i).padStart(5, '0')}`,
    description: `Benchmark flag number ${i}`,
    enabled: i % 3 !== 0,
    ...(i % 4 === 0 ? { variants: [{ key: 'a', weight: 50, value: 'a' }, { key: 'b', weight: 50, value: 'b' }] } : {}),
    ...(i % 2 === 0 ? { rollout: { percentage: i % 100 } } : {}),
  }));
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (xs) => `median ${median(xs).toFixed(0)} ms (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)}, ${xs.length} runs)`;

const dir = mkdtempSync(join(tmpdir(), 'guidon-console-load-'));
const token = `gdn_${randomBytes(16).toString('hex')}`;
const child = spawn(args.guidon, ['serve', '--listen', '127.0.0.1:0', '--database-url', `sqlite://${join(dir, 'g.db')}`],
  { env: { ...process.env, GUIDON_ADMIN_TOKEN: token, GUIDON_ADMIN_PASSWORD: PASSWORD, GUIDON_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
let log = '';
const server = await new Promise((resolve, reject) => {
  const onData = (c) => { log += c; const m = log.match(/^guidon: listening on (http:\/\/\S+)$/m); if (m) resolve(m[1]); };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  child.once('exit', (code) => reject(new Error(`guidon exited ${code}: ${log}`)));
});
const browser = await chromium.launch({ executablePath: args.chromium, headless: true });
try {
  console.log(`machine: ${cpus().length} × ${cpus()[0].model}; guidon ${args.guidon}`);
  for (const n of args.sizes.split(',').map(Number)) {
    const env = `bench${n}`;
    await fetch(`${server}/api/v1/envs`, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ name: env }) });
    const put = await fetch(`${server}/api/v1/envs/${env}/flags`, {
      method: 'PUT', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ flags: flags(n) }),
    });
    if (put.status !== 200) throw new Error(`import: HTTP ${put.status}: ${await put.text()}`);
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server}/`);
    await page.getByLabel('User').fill('admin');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: /^Flags in / }).waitFor();
    await page.goto(`${server}/#/env/${env}`);
    await page.getByText(`${n} flags`, { exact: true }).waitFor();
    const loads = [];
    const searches = [];
    const bytes = [];
    for (let run = 0; run < Number(args.runs); run++) {
      // A fresh document each time: the page, its script and the overview.
      let received = 0;
      const onResponse = async (r) => { try { received += (await r.body()).length; } catch { /* a stream */ } };
      page.on('response', onResponse);
      const start = Date.now();
      await page.reload({ waitUntil: 'commit' });
      await page.getByText(`${n} flags`, { exact: true }).waitFor();
      await page.getByRole('link', { name: 'flag_00000', exact: true }).waitFor();
      loads.push(Date.now() - start);
      page.off('response', onResponse);
      bytes.push(received);
      const s0 = Date.now();
      await page.getByLabel('Search flags').fill('flag_00042');
      await page.getByText(/^1 of \d+ flags$/).waitFor();
      searches.push(Date.now() - s0);
    }
    console.log(`${n} flags: first load to rows drawn ${fmt(loads)}; search redraw ${fmt(searches)}; ~${Math.round(median(bytes) / 1024)} KiB received`);
    await page.context().close();
  }
} finally {
  await browser.close();
  child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
