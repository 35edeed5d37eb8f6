// The run as a page, in a real browser (make browser-test): starts the
// built binary (`handler serve`, its embedded simulator, runs in memory),
// runs a finished asynchronous run and a rollout its gate halts, then
// loads each run's page in headless Chromium, checks the DOM against the
// run's JSON, runs axe-core's accessibility rules, checks the page at
// 375 px wide, and saves the screenshots the README shows.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const tools = process.env.BROWSER_TOOLS;
const require = createRequire(path.join(tools, 'package.json'));
const { chromium } = require('playwright-core');
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const shots = process.env.SCREENSHOTS || 'docs';

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

// serve starts the binary and resolves with its address and scripts.
function serve() {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn('bin/handler', ['serve'], {
    env: { ...process.env, PORT: String(port), GRAPH_WRITE_RATE: '10', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let buf = '', info = {};
    const timer = setTimeout(() => reject(new Error('the server did not start')), 30000);
    child.stderr.on('data', (d) => {
      buf += d;
      for (const line of buf.split('\n')) {
        try {
          const j = JSON.parse(line);
          if (j.good_script) Object.assign(info, { sim: j.graph_base_url, good: j.good_script, bad: j.bad_script });
          if (j.msg === 'listening') {
            clearTimeout(timer);
            resolve({ child, base: `http://${j.addr}`, ...info });
          }
        } catch { /* a partial line */ }
      }
    });
    child.on('exit', (code) => reject(new Error(`the server exited (${code})`)));
  });
}

async function json(url, init) {
  const r = await fetch(url, { ...init, headers: { 'Content-Type': 'application/json', ...(init?.headers || {}) } });
  return { status: r.status, location: r.headers.get('location'), body: await r.json() };
}

// finish polls a run's status URL until its answer is final.
async function finish(url) {
  for (let i = 0; i < 240; i++) {
    const r = await json(url);
    if (r.status !== 202) return r;
    await new Promise((ok) => setTimeout(ok, 500));
  }
  throw new Error(`${url} did not finish`);
}

async function axe(page, name) {
  // The page's CSP forbids scripts: axe runs through the DevTools
  // protocol, which CSP does not govern.
  const results = await page.evaluate(`(async () => { ${axeSource}; return await axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'best-practice'] }); })()`);
  const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of results.violations) console.log(`     axe ${v.impact}: ${v.id} (${v.nodes.length}) ${v.help}`);
  check(bad.length === 0, `${name}: no serious or critical accessibility violation (axe-core ${results.testEngine.version}, ${results.passes.length} rules passed)`);
}

const srv = await serve();
try {
  const devices = await (await fetch(`${srv.sim}/deviceManagement/managedDevices?$top=999&$filter=${encodeURIComponent("operatingSystem eq 'Windows'")}`)).json();
  const ids = devices.value.filter((d) => d.managementAgent === 'mdm' && d.joinType !== 'azureADRegistered').map((d) => d.id);
  const request = (from, n, script, extra) => JSON.stringify({
    managed_devices: ids.slice(from, from + n).map((id) => ({ device_id: id, script_policy_id: script })), mode: 'async', ...extra,
  });

  // A finished run, with some devices that fail their script.
  const run = await json(`${srv.base}/api/remediate`, { method: 'POST', body: request(0, 60, srv.bad) });
  check(run.status === 202, `asynchronous run accepted (${run.status})`);
  const done = await finish(run.location);
  // A rollout its gate halts after the first wave.
  const roll = await json(`${srv.base}/api/remediate`, { method: 'POST', body: request(100, 80, srv.bad, { rollout: { waves: ['25%', '100%'], gate: { poll: '1s', wait: '1m' } } }) });
  const halted = await finish(roll.location);
  check(halted.body.status === 'halted', `the bad rollout halted (${halted.body.status})`);

  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

  // The finished run, with its scripts' results.
  await new Promise((ok) => setTimeout(ok, 2500)); // the devices report 2 s after their trigger
  await page.goto(`${run.location}?format=html&follow=true`);
  const state = await page.textContent('#state');
  check(state === done.body.status, `finished run: state ${state} is the JSON's ${done.body.status}`);
  check(Number(await page.textContent('#total')) === done.body.counts.total, `finished run: ${done.body.counts.total} devices in all`);
  const triggered = Number(await page.getAttribute('#progress rect[data-outcome="Triggered"]', 'data-count'));
  check(triggered === done.body.counts.succeeded, `finished run: the progress bar's triggered (${triggered}) is the JSON's`);
  const attention = await page.$$eval('#attention tr.device', (rows) => rows.length).catch(() => 0);
  check(attention > 0, `finished run: ${attention} devices that need attention (the script failed on them)`);
  check(await page.$('#cancel') === null, 'finished run: no cancel button');
  await axe(page, 'finished run');
  await page.screenshot({ path: path.join(shots, 'run-page.png'), fullPage: true });

  // The halted rollout.
  await page.goto(`${roll.location}?format=html`);
  check((await page.textContent('#state')) === 'halted', 'halted rollout: state halted');
  check((await page.$$eval('#waves tr.wave', (rows) => rows.length)) === 2, 'halted rollout: a row for each wave');
  check((await page.textContent('#halted')).includes('wave 1'), 'halted rollout: why it halted');
  check(await page.$('#resume') !== null && await page.$('#cancel') !== null, 'halted rollout: resume and cancel buttons (POST forms)');
  check((await page.content()).includes('name="csrf"'), 'halted rollout: the forms carry the page token');
  await axe(page, 'halted rollout');
  await page.screenshot({ path: path.join(shots, 'rollout-page.png'), fullPage: true });

  // 375 px wide: nothing wider than the screen but the tables' own scroll.
  await page.setViewportSize({ width: 375, height: 800 });
  await page.goto(`${roll.location}?format=html`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `375 px wide: the page fits (${overflow} px over)`);

  // The cancel button works: a form post with the page's token, back to the page.
  await Promise.all([page.waitForNavigation(), page.click('#cancel')]);
  if (!(await page.$('#state'))) console.log(`     after cancel: ${page.url()}: ${(await page.content()).slice(0, 400)}`);
  check(['running', 'cancelled'].includes(await page.textContent('#state')), `cancel from the page: ${await page.textContent('#state')}`);
  check(errors.length === 0, `no console errors (${errors.join('; ')})`);
  // The Content-Security-Policy holds: a script put into the page does not run.
  await page.addScriptTag({ content: 'window.injected = true' }).catch(() => {});
  check(!(await page.evaluate('window.injected === true')) && errors.some((e) => e.includes('Content Security Policy')),
    'an injected script is blocked by the page\'s Content-Security-Policy');
  await browser.close();
} finally {
  srv.child.kill('SIGTERM');
}
if (failures > 0) {
  console.log(`${failures} checks failed`);
  process.exit(1);
}
console.log('browser test: all checks passed');
