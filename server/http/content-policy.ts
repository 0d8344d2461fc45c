// The Content-Security-Policy every answer carries: the site's pages run only vserverd's own
// scripts (no inline ones, no handlers in markup), load only its own styles, images and
// connections (noVNC and xterm.js are served from the npm packages, site/assets.ts), and cannot
// be framed. docs/website.md explains each choice.

import crypto from 'node:crypto';

type Policy = Record<string, string[]>;

const POLICY: Policy = {
  'default-src': ["'self'"],
  'script-src': ["'self'"],
  'style-src': ["'self'"],
  // data: for the page's empty favicon and noVNC's cursor; blob: for images a script makes.
  'img-src': ["'self'", 'data:', 'blob:'],
  // 'self' covers the same host's ws: (the API's and the consoles' WebSockets).
  'connect-src': ["'self'"],
  'object-src': ["'none'"],
  'base-uri': ["'none'"],
  'form-action': ["'self'"],
  'frame-ancestors': ["'none'"],
};

function text(policy: Policy): string {
  return Object.entries(policy).map(([directive, sources]) => `${directive} ${sources.join(' ')}`).join('; ');
}

/** A CSP source allowing exactly this inline <style> text. */
export function styleHash(css: string): string {
  return `'sha256-${crypto.createHash('sha256').update(css, 'utf8').digest('base64')}'`;
}

/** The policy for every answer; `inlineStyles` are the hashes of the few <style> texts allowed (the sign-in page's). */
export function contentSecurityPolicy(inlineStyles: string[]): string {
  return text({ ...POLICY, 'style-src': [...POLICY['style-src'], ...inlineStyles] });
}

/**
 * Remote Control's policy: xterm.js's renderer writes the cell sizes it measures and the colours
 * of the text into <style> elements and style attributes it makes at run time, which no hash or
 * nonce can name. Only styles are widened, on this page alone; scripts stay the site's own, and
 * with images, fonts and connections limited to this host a style cannot send anything away.
 */
export const CONSOLE_POLICY = text({ ...POLICY, 'style-src': [...POLICY['style-src'], "'unsafe-inline'"] });
