// The preference center as a user meets it, in Debian's headless Chromium:
//   node preference-center.mjs <preference center URL> <unsubscribe URL> <artifacts dir>
// 1. With JavaScript off and the page's own Content-Security-Policy on: every control is
//    labelled and reachable by keyboard with a visible focus; SMS off and quiet hours
//    22:00–07:00 are set and saved; a reload shows them kept. Nothing breaks the policy.
// 2. Screenshots at 320 px and 1280 px (no sideways scrolling on the phone).
// 3. axe-core on the center and the unsubscribe pages: no serious or critical violations.
// 4. The unsubscribe page: one click unsubscribes, the undo button takes it back.
// Prints what it saw as JSON; exits non-zero with the reason on the first failure.
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [centerUrl, unsubscribeUrl, artifacts] = process.argv.slice(2);
if (!centerUrl || !unsubscribeUrl || !artifacts) {
  console.error('usage: node preference-center.mjs <center URL> <unsubscribe URL> <artifacts dir>');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  // This machine's network is closed: Chromium's own background traffic only fails.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const seen = {};
try {
  // 1. No script, the page's policy enforced.
  const plain = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
  const page = await plain.newPage();
  const violations = [];
  page.on('console', (message) => {
    if (/Content.Security.Policy/i.test(message.text())) violations.push(message.text());
  });
  const response = await page.goto(centerUrl);
  check(response.status() === 200, `GET center: ${response.status()}`);
  const headers = response.headers();
  check(/frame-ancestors 'none'/.test(headers['content-security-policy'] ?? ''), 'no CSP frame-ancestors');
  check(headers['referrer-policy'] === 'no-referrer', 'no Referrer-Policy');
  seen.title = await page.title();
  // The stylesheet applied: the policy allows it by hash, so a mismatch would leave the page bare.
  const buttonColor = await page.locator('button[type=submit]').evaluate((b) => getComputedStyle(b).backgroundColor);
  check(buttonColor !== 'rgba(0, 0, 0, 0)' && buttonColor !== 'rgb(239, 239, 239)', `unstyled button (${buttonColor})`);

  // Every control by keyboard, each with a label and a visible focus ring.
  // A time input takes several Tab stops (its hour and minute fields, its picker button); its
  // ring shows while the input itself has focus.
  const reached = [];
  for (let i = 0; i < 30 && !reached.includes('button'); i += 1) {
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => {
      const element = document.activeElement;
      if (!element || element === document.body || !element.matches(':focus')) return null;
      const style = getComputedStyle(element);
      const label = element.labels?.[0]?.textContent.trim() ?? element.textContent.trim();
      return { id: element.id || element.tagName.toLowerCase(), label, outline: style.outlineStyle, width: style.outlineWidth };
    });
    if (!focused || reached.includes(focused.id)) continue;
    check(focused.label.length > 0, `unlabelled control ${focused.id}`);
    // The page's own ring (3px solid), not the browser's default one.
    check(focused.outline === 'solid' && focused.width === '3px', `no visible focus ring on ${focused.id}`);
    reached.push(focused.id);
  }
  for (const id of ['channel-push', 'channel-sms', 'channel-email', 'quiet-hours', 'quiet-start', 'quiet-end', 'button']) {
    check(reached.includes(id), `${id} not reachable by Tab (reached ${reached.join(', ')})`);
  }
  seen.keyboard = reached;

  // Change and save, by label as a user would.
  await page.getByLabel(/SMS/).uncheck();
  await page.locator('#quiet-hours').check();
  await page.locator('#quiet-start').fill('22:00');
  await page.locator('#quiet-end').fill('07:00');
  await Promise.all([page.waitForURL(/saved=1/), page.locator('button[type=submit]').click()]);
  check(await page.locator('[role=status]').isVisible(), 'no saved notice');
  await page.reload();
  check(!(await page.locator('#channel-sms').isChecked()), 'SMS is on again after a reload');
  check(await page.locator('#channel-email').isChecked(), 'email was turned off');
  check(await page.locator('#quiet-hours').isChecked(), 'quiet hours off after a reload');
  check((await page.locator('#quiet-start').inputValue()) === '22:00', 'quiet start not kept');
  check((await page.locator('#quiet-end').inputValue()) === '07:00', 'quiet end not kept');
  seen.saved = { sms: false, quiet_hours: '22:00-07:00' };

  // 2. Screenshots; on a phone nothing scrolls sideways.
  for (const width of [320, 1280]) {
    await page.setViewportSize({ width, height: 900 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `${overflow}px of sideways scrolling at ${width}px`);
    await page.screenshot({ path: join(artifacts, `preference-center-${width}.png`), fullPage: true });
  }
  check(violations.length === 0, `the page broke its own Content-Security-Policy: ${violations.join(' | ')}`);
  await plain.close();

  // 3. axe-core (injected past the policy, which allows no script by design).
  const audit = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
  const auditPage = await audit.newPage();
  seen.axe = {};
  for (const [name, url] of [['center', centerUrl], ['unsubscribe', unsubscribeUrl]]) {
    await auditPage.goto(url);
    await auditPage.addScriptTag({ content: axeSource });
    const results = await auditPage.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
    const serious = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    check(serious.length === 0, `axe on ${name}: ${serious.map((v) => `${v.id} (${v.impact}): ${v.help}`).join('; ')}`);
    seen.axe[name] = results.violations.map((v) => `${v.id} (${v.impact})`);
  }
  await audit.close();

  // 4. Unsubscribe in one click, then undo, with no script.
  const mail = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 320, height: 700 } });
  const unsubscribe = await mail.newPage();
  await unsubscribe.goto(unsubscribeUrl);
  await unsubscribe.screenshot({ path: join(artifacts, 'unsubscribe-320.png'), fullPage: true });
  await unsubscribe.locator('button[type=submit]').click();
  await unsubscribe.locator('input[name=undo]').waitFor({ state: 'attached' });
  seen.unsubscribed = await unsubscribe.locator('h1').textContent();
  await unsubscribe.screenshot({ path: join(artifacts, 'unsubscribed-320.png'), fullPage: true });
  await unsubscribe.locator('button[type=submit]').click();
  await unsubscribe.locator('input[name=undo]').waitFor({ state: 'detached' });
  check((await unsubscribe.locator('a[href*="preferences/"]').count()) === 1, 'no link to the preference center');
  seen.undone = await unsubscribe.locator('h1').textContent();
  await mail.close();
  console.log(JSON.stringify(seen));
} catch (error) {
  console.error(error.message);
  console.log(JSON.stringify(seen));
  process.exitCode = 1;
} finally {
  await browser.close();
}
