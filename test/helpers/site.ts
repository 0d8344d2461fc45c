// A browser session on the administration site, spoken over plain HTTP: sign in by the form,
// then read pages and send forms with the session's cookie and CSRF token. For tests of what
// the server answers; test/helpers/browser.ts drives a real browser. Also what a console
// WebSocket's upgrade came to.

import type { WebSocket } from 'ws';

export class SiteSession {
  private constructor(readonly url: string, readonly cookie: string, readonly csrf: string) {}

  /** Signs in through POST /login and reads the CSRF token from Master Status. */
  static async signIn(url: string, user: string, password: string): Promise<SiteSession> {
    const response = await fetch(`${url}/login`, { method: 'POST', redirect: 'manual', body: new URLSearchParams({ user, password }) });
    const cookie = (response.headers.get('set-cookie') ?? '').split(';')[0];
    if (response.status !== 303 || !cookie) throw new Error(`sign-in as ${user} failed: ${response.status} ${await response.text()}`);
    const page = await fetch(`${url}/`, { headers: { cookie } });
    const csrf = /<meta name="csrf-token" content="([^"]+)"/.exec(await page.text())?.[1];
    if (!csrf) throw new Error('Master Status carries no csrf-token meta tag');
    return new SiteSession(url, cookie, csrf);
  }

  /** GET a page (redirects are not followed: a redirect to /login must be seen). */
  get(path: string, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(`${this.url}${path}`, { headers: { cookie: this.cookie, ...headers }, redirect: 'manual' });
  }

  async text(path: string): Promise<string> {
    const response = await this.get(path);
    if (response.status !== 200) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
    return response.text();
  }

  /** POSTs a form with the session's CSRF token (unless `csrf` is given, null leaves it out). */
  post(path: string, fields: Record<string, string>, options: { csrf?: string | null; json?: boolean; headers?: Record<string, string> } = {}): Promise<Response> {
    const body = new URLSearchParams(fields);
    const token = options.csrf === undefined ? this.csrf : options.csrf;
    if (token !== null) body.set('_csrf', token);
    return fetch(`${this.url}${path}`, {
      method: 'POST', body, redirect: 'manual',
      headers: { cookie: this.cookie, ...(options.json ? { accept: 'application/json' } : {}), ...options.headers },
    });
  }
}

/** Undoes EJS's escaping, to compare a page's text with what the API said. */
export function unescapeHtml(text: string): string {
  return text.replace(/&#34;|&quot;/g, '"').replace(/&#39;/g, '\'').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

/** The message shown beside a form field (views/partials/field-error.ejs), or null. */
export function fieldError(html: string, field: string): string | null {
  const match = new RegExp(`<span class="field-error" id="${field}-error" role="alert">([^<]*)</span>`).exec(html);
  return match ? unescapeHtml(match[1]) : null;
}

/** An upgrade the server refused: its HTTP status and the body saying why. */
export interface UpgradeRefusal { status: number; body: string }

/** Resolves with `opened` once the WebSocket opens, or with the refusal when the upgrade is answered otherwise. */
export function openedOrRefused<T>(ws: WebSocket, opened: T): Promise<T | UpgradeRefusal> {
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(opened));
    ws.once('unexpected-response', (_request, response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (s: string) => { body += s; });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    ws.once('error', reject);
  });
}
