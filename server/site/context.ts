// What every page of the administration site shares: the signed-in caller, calls into the API
// on the caller's behalf (so the site can do exactly what the caller's rights allow, and no
// more), and turning an API refusal into a message beside the form field it concerns.

import type { Request, Response } from 'express';
import { call } from '../api/dispatch.js';
import { ERRORS, type ErrorName } from '../error-catalogue.js';
import { toApiError } from '../errors.js';
import type { Services } from '../api/services.js';
import type { Right } from '../api/schema-types.js';
import type { Caller } from '../http/authenticate.js';

export type SiteRequest = Request & { caller?: Caller };

export interface SiteContext {
  services: Services;
  sessionTimeoutMinutes: number;
  allowedOrigins: string[];
  /** Seconds between thumbnail refreshes on Master Status. */
  thumbnailSeconds: number;
}

/** Calls an API member as the request's caller; refusals arrive as ApiError. */
export async function api<T = unknown>(ctx: SiteContext, req: SiteRequest, method: string, params: Record<string, unknown> = {}): Promise<T> {
  try {
    return await call(method, params, req.caller!.principal, ctx.services) as T;
  } catch (error) {
    throw toApiError(error);
  }
}

/**
 * Reads each of a list (the VMs of the cluster, say); one whose read fails (its host is Down)
 * becomes a message beside the others instead of the whole page's failure.
 */
export async function readEach<T, R>(items: readonly T[], read: (item: T) => Promise<R>): Promise<{ values: R[]; refusals: string[] }> {
  const settled = await Promise.allSettled(items.map(read));
  return {
    values: settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : [])),
    refusals: settled.flatMap((s) => (s.status === 'rejected' ? [refusalMessage(s.reason)] : [])),
  };
}

/** Whether the caller holds `right` on `object` (a reference such as VirtualMachine/<id>). */
export function can(ctx: SiteContext, req: SiteRequest, right: Right, object: string): boolean {
  return ctx.services.access.rightsOn(req.caller!.principal, object).has(right);
}

export type FieldErrors = Record<string, string>;

/**
 * An API refusal as messages keyed by form field: `fieldOf` maps the API's parameter (or, for a
 * refused configuration, the document's field such as "memoryMB" or "networkAdapters") to the
 * form's field; what maps to nothing is shown at the top of the form under "_form".
 */
export function fieldErrors(error: unknown, fieldOf: (apiField: string) => string | undefined = () => undefined): FieldErrors {
  const e = toApiError(error);
  const errors: FieldErrors = {};
  const add = (field: string | undefined, message: string): void => {
    const key = field ?? '_form';
    errors[key] = errors[key] ? `${errors[key]}; ${message}` : message;
  };
  const problems = e.details.problems as { field: string; message: string }[] | undefined;
  if (e.errorName === 'VM_E_CONFIG_INVALID' && problems?.length) {
    for (const p of problems) add(fieldOf(p.field.replace(/[[.].*$/, '')), p.message);
  } else {
    const param = typeof e.details.param === 'string' ? e.details.param : undefined;
    add(param ? fieldOf(param) ?? param : undefined, e.message);
  }
  return errors;
}

/** The error's stable name, for pages that react to one in particular. */
export function errorName(error: unknown): ErrorName {
  return toApiError(error).errorName;
}

/** Refusals because a file or a part of a VM does not exist: a page's address names those, and so do forms. */
const UNKNOWN_NAMED: ReadonlySet<ErrorName> = new Set(['VM_E_OBJECT_UNKNOWN', 'VM_E_HD_IMAGE_NOT_FOUND']);

/**
 * The HTTP status of an API refusal, the same on every page: the catalogue's (403 for a missing
 * right, 409 when the state of what is acted on is in the way, 404 when what the request asks
 * for does not exist, 400 for most of the rest). A file or part of a VM that a form names
 * (`of: 'form'`) and that does not exist is the form's mistake: 400, with the message beside its field.
 */
export function refusalStatus(error: unknown, of: 'page' | 'form' = 'page'): number {
  const name = errorName(error);
  return of === 'form' && UNKNOWN_NAMED.has(name) ? 400 : ERRORS[name].http;
}

/** All the API says of a refusal, in one line. */
export function refusalMessage(error: unknown): string {
  return Object.values(fieldErrors(error)).join('; ');
}

/** Answers a request the API refused with the refusal page: its status, and its message after "`doing`: ". */
export function refuseFor(req: SiteRequest, res: Response, error: unknown, doing?: string): void {
  const message = refusalMessage(error);
  refusePage(req, res, refusalStatus(error), doing ? `${doing}: ${message}` : message);
}

/** Answers a refused request: JSON for the site's scripts, a page otherwise. */
export function refusePage(req: SiteRequest, res: Response, status: number, message: string): void {
  if (wantsJson(req)) {
    res.status(status).json({ error: { message } });
    return;
  }
  // Before the page's frame is known (no session), a line of text.
  if (!res.locals.csrf) {
    res.status(status).type('text/plain').send(`${message}\n`);
    return;
  }
  res.status(status).render('error', { title: 'Refused', message, status });
}

/** The site's scripts send forms with fetch and ask for JSON; without scripts a form posts and redirects. */
export function wantsJson(req: Request): boolean {
  return (req.get('accept') ?? '').includes('application/json');
}

/** A local path to go back to after a form; anything else (another host, "//x") becomes `fallback`. */
export function backTo(value: unknown, fallback: string): string {
  return typeof value === 'string' && /^\/(?![/\\])/.test(value) ? value : fallback;
}
