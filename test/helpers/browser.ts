// A real browser for the website's tests: Debian's chromium (installed by scripts/setup.sh
// test), driven by playwright-core, which downloads nothing. Screenshots and other artifacts go
// to test-artifacts/ (or VSERVER_TEST_ARTIFACTS) so a failed run can be looked at.

import fs from 'node:fs';
import path from 'node:path';
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core';
import { PROJECT_ROOT } from './vhd-fixtures.js';

export const CHROMIUM = process.env.VSERVER_CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS = process.env.VSERVER_TEST_ARTIFACTS ?? path.join(PROJECT_ROOT, 'test-artifacts');

export async function launchBrowser(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run scripts/setup.sh test (it installs Debian's chromium), or set VSERVER_CHROMIUM`);
  // As root chromium needs --no-sandbox; the pages it opens are our own, on loopback.
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
}

/** Every Content-Security-Policy violation any page of any context made here reported, with its page. */
const violations: string[] = [];
export function policyViolations(): readonly string[] {
  return violations;
}

/**
 * Reports each CSP violation of the context's pages: the page's securitypolicyviolation events
 * (through a binding, which outlives navigations) and the browser's own console messages.
 */
async function watchPolicy(context: BrowserContext): Promise<void> {
  await context.exposeBinding('__vserverPolicyViolation', ({ page }, what: string) => { violations.push(`${page.url()}: ${what}`); });
  await context.addInitScript({
    content: `document.addEventListener('securitypolicyviolation', (e) => {
      window.__vserverPolicyViolation(e.effectiveDirective + ' refused ' + (e.blockedURI || 'an inline part') + (e.sample ? ' (' + e.sample + ')' : '') + ' at ' + e.sourceFile + ':' + e.lineNumber);
    });`,
  });
  context.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) violations.push(`${message.page()?.url() ?? '?'}: ${message.text()}`);
  });
}

/** A fresh browser profile (no cookies) at 1280x800, or a narrow phone-sized one, whose CSP violations are recorded. */
export async function newContext(browser: Browser, baseURL: string, size: 'desktop' | 'narrow' = 'desktop'): Promise<BrowserContext> {
  const viewport = size === 'desktop' ? { width: 1280, height: 800 } : { width: 390, height: 760 };
  const context = await browser.newContext({ baseURL, viewport });
  context.setDefaultTimeout(30_000);
  await watchPolicy(context);
  return context;
}

/** Signs in through the sign-in form; the page ends on Master Status. */
export async function signIn(page: Page, user: string, password: string): Promise<void> {
  await page.goto('/login');
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL((url) => url.pathname === '/');
}

/** Saves a screenshot (or any bytes) under the artifacts folder and returns its path. */
export function saveArtifact(name: string, bytes: Buffer): string {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  fs.writeFileSync(file, bytes);
  return file;
}

/** Marks the page's window; `stillSamePage` tells whether it was reloaded or left since. */
export async function markPage(page: Page): Promise<() => Promise<boolean>> {
  const mark = `m${Math.random().toString(36).slice(2)}`;
  await page.evaluate((m) => { (globalThis as Record<string, unknown>).__vserverMark = m; }, mark);
  return async () => await page.evaluate(() => (globalThis as Record<string, unknown>).__vserverMark) === mark;
}
