// What the site's forms share: reading a posted field, a refusal and the form field it is shown
// beside, and the two answers a form gets. Done: a redirect (303), or `{ok: true, ...}` for the
// site's scripts. Refused: the page again with the messages beside their fields, or the messages
// as JSON.

import type { Response } from 'express';
import { ApiError, toApiError } from '../errors.js';
import type { Field } from '../api/fields.js';
import { type FieldErrors, type SiteRequest, fieldErrors, wantsJson } from './context.js';

export type Form = Record<string, unknown>;

/** A posted (or query) value as trimmed text; "" when it is absent or not text. */
export function text(value: unknown): string {
  return typeof value === 'string' ? value.trim() : '';
}

/**
 * A refusal, and the form field it is shown beside: the field `params` gives for the API
 * parameter it names, else `field`.
 */
export class Refusal extends Error {
  constructor(readonly field: string, readonly reason: unknown, readonly params: Record<string, string> = {}) {
    super(reason instanceof Error ? reason.message : String(reason));
  }
}

/** Runs one API call whose refusal belongs beside `field` (chosen by the error when a function). */
export async function beside<T>(field: string | ((error: ApiError) => string), work: Promise<T>, params: Record<string, string> = {}): Promise<T> {
  try {
    return await work;
  } catch (error) {
    throw new Refusal(typeof field === 'string' ? field : field(toApiError(error)), error, params);
  }
}

/** A value the form can tell is wrong before the API is asked. */
export function problem(field: string, message: string): Refusal {
  return new Refusal(field, new ApiError('VM_E_INVALID_PARAMS', message));
}

export function wholeNumber(form: Form, name: string, what: string): number {
  const value = text(form[name]);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw problem(name, `${what} is a whole number${value ? `; "${value}" is not one` : ''}`);
  return Number(value);
}

/**
 * A whole number within the limits its member declares (`limits`, the parameter's field from
 * server/api/fields.ts), refused in the site's words (`outside`) before the API is asked.
 */
export function wholeNumberWithin(form: Form, name: string, what: string, limits: Pick<Field, 'min' | 'max'>, outside: (value: number) => string): number {
  const value = wholeNumber(form, name, what);
  if ((limits.min !== undefined && value < limits.min) || (limits.max !== undefined && value > limits.max)) throw problem(name, outside(value));
  return value;
}

/**
 * An API refusal as messages by form field: a parameter the API names (or a field of a refused
 * configuration) beside `params[param]`, the rest beside `field` (chosen by the error when a
 * function; nothing chosen is the top of the form, "_form").
 */
export function refusalErrors(error: unknown, field: string | ((error: ApiError) => string | undefined) = '_form', params: Record<string, string> = {}): FieldErrors {
  const step = (typeof field === 'string' ? field : field(toApiError(error))) ?? '_form';
  const errors = fieldErrors(error, (apiField) => params[apiField] ?? step);
  if (errors._form && step !== '_form') {
    errors[step] = errors[step] ? `${errors[step]}; ${errors._form}` : errors._form;
    delete errors._form;
  }
  return errors;
}

/** Answers a refused form: the messages by field as JSON for the site's scripts; otherwise `status` and the page again (`render`). */
export function refuseForm(req: SiteRequest, res: Response, status: number, errors: FieldErrors, render: () => Promise<void> | void): Promise<void> | void {
  if (wantsJson(req)) {
    res.status(status).json({ error: { message: Object.values(errors).join('; '), fields: errors } });
    return;
  }
  res.status(status);
  return render();
}

/** Answers a form that did what it asked: `{ok: true, ...answer}` for the site's scripts, a redirect to `location` otherwise. */
export function answerDone(req: SiteRequest, res: Response, location: string, answer: Record<string, unknown> = { location }): void {
  if (wantsJson(req)) res.json({ ok: true, ...answer });
  else res.redirect(303, location);
}
