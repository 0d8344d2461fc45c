// Event Viewer: the event log, newest first, filtered by category, severity, VM and time. The
// filter is a GET form, so a filtered view can be bookmarked; "older" pages go down by id.
// static/events.js adds new entries at the top as the WebSocket announces them, by asking
// GET /events/rows for the rows newer than the newest shown (rendered by the same partial).
// Times are shown, and "from"/"to" read, in the server's time zone.

import type { Response, Router } from 'express';
import { EVENT_CATEGORIES, SEVERITIES } from '../api/schema.js';
import type { LoggedEvent } from '../event-log.js';
import { type FieldErrors, type SiteContext, type SiteRequest, api, fieldErrors, readEach, refuseFor, refusalMessage, refusalStatus } from './context.js';
import { type EventFilter, type ReadEvents, readNewer, readPage } from './event-reader.js';
import { text } from './forms.js';

const PAGE_SIZE = 50;

/** The form's fields as given (shown back in the form and carried in links). */
interface EventForm { category: string; severity: string; vm: string; from: string; to: string }

interface Vm { id: string; name: string }

export function eventRoutes(router: Router, ctx: SiteContext): void {
  router.get('/events', async (req: SiteRequest, res: Response) => {
    try {
      const vms = await visibleVms(ctx, req);
      const { form, filter, errors } = readFilter(req.query, vms);
      const before = req.query.before === undefined ? null : positiveId(req.query.before);
      if (before === undefined) errors._form = `"before" must be an event id (a whole number above 0), not "${String(req.query.before)}"`;
      const view = {
        title: 'Event Viewer', form, filter, errors, vms, vmNames: new Map(vms.map((vm) => [vm.id, vm.name])), formatTime,
        categories: EVENT_CATEGORIES.filter((c) => c !== 'Security' || res.locals.role === 'Administrator'), severities: SEVERITIES,
        pageSize: PAGE_SIZE, timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone, live: before === null, newestHref: before ? linkTo(form, {}) : null,
      };
      if (Object.keys(errors).length) return res.status(400).render('server/events', { ...view, events: [], olderHref: null });
      try {
        const page = await readPage(readAs(ctx, req), filter, before ?? null, PAGE_SIZE);
        const olderHref = page.older === null ? null : linkTo(form, { before: String(page.older) });
        res.render('server/events', { ...view, events: page.events, olderHref });
      } catch (error) {
        // The API judges category and severity: its refusal goes beside the field.
        res.status(refusalStatus(error)).render('server/events', { ...view, events: [], olderHref: null, errors: fieldErrors(error, (param) => (param === 'object' ? 'vm' : param)) });
      }
    } catch (error) {
      refuseFor(req, res, error);
    }
  });

  // The rows newer than "after" that the filter allows, for static/events.js.
  router.get('/events/rows', async (req: SiteRequest, res: Response) => {
    try {
      const vms = await visibleVms(ctx, req);
      const { filter, errors } = readFilter(req.query, vms);
      const after = positiveId(req.query.after ?? '0', true);
      if (after === undefined) errors.after = `"after" must be an event id, not "${String(req.query.after)}"`;
      if (after === undefined || Object.keys(errors).length) return res.status(400).type('text/plain').send(`${Object.values(errors).join('; ')}\n`);
      const events = await readNewer(readAs(ctx, req), filter, after);
      res.render('server/event-rows', { events, formatTime, vmNames: new Map(vms.map((vm) => [vm.id, vm.name])) });
    } catch (error) {
      res.status(refusalStatus(error)).type('text/plain').send(`${refusalMessage(error)}\n`);
    }
  });
}

/** GetEvents as the signed-in user. */
function readAs(ctx: SiteContext, req: SiteRequest): ReadEvents {
  return (params) => api<LoggedEvent[]>(ctx, req, 'VirtualServer.GetEvents', params);
}

export async function visibleVms(ctx: SiteContext, req: SiteRequest): Promise<Vm[]> {
  const refs = await api<{ $ref: string }[]>(ctx, req, 'VirtualServer.get_VirtualMachines');
  const vms = (await readEach(refs, async ({ $ref }) => ({ id: $ref.slice('VirtualMachine/'.length), name: await api<string>(ctx, req, 'VirtualMachine.get_Name', { this: $ref }) }))).values;
  return vms.sort((a, b) => a.name.localeCompare(b.name));
}

/** The query's filter; category and severity are left for the API to judge. */
function readFilter(query: SiteRequest['query'], vms: Vm[]): { form: EventForm; filter: EventFilter; errors: FieldErrors } {
  const form: EventForm = { category: text(query.category), severity: text(query.severity), vm: text(query.vm), from: text(query.from), to: text(query.to) };
  const errors: FieldErrors = {};
  const filter: EventFilter = { category: form.category || undefined, severity: form.severity || undefined };
  if (form.vm) {
    if (vms.some((vm) => vm.id === form.vm)) filter.object = `VirtualMachine/${form.vm}`;
    else errors.vm = `there is no virtual machine ${form.vm} that you may see`;
  }
  for (const field of ['from', 'to'] as const) {
    if (!form[field]) continue;
    const range = localTimeRange(form[field]);
    if (!range) errors[field] = `"${form[field]}" is not a date and time (YYYY-MM-DDTHH:MM, seconds optional)`;
    else filter[field] = field === 'from' ? range.start : range.end;
  }
  if (filter.from !== undefined && filter.to !== undefined && filter.from > filter.to) errors.to = 'must not be before "from"';
  return { form, filter, errors };
}

/**
 * A datetime-local value in the server's time zone, as the span it names: "10:05" is the whole
 * minute, so "to 10:05" includes an entry at 10:05:30.
 */
export function localTimeRange(value: string): { start: number; end: number } | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(value);
  if (!m) return null;
  const [year, month, day, hour, minute] = m.slice(1, 6).map(Number);
  const second = Number(m[6] ?? 0);
  const fraction = m[7] ?? '';
  const date = new Date(year, month - 1, day, hour, minute, second, Number(fraction.padEnd(3, '0') || 0));
  // new Date rolls 31 February over into March (and years below 100 into the 1900s): such a value names no time.
  if (date.getFullYear() !== year || date.getMonth() !== month - 1 || date.getDate() !== day || hour > 23 || minute > 59 || second > 59) return null;
  const span = fraction ? 10 ** (3 - fraction.length) : m[6] !== undefined ? 1000 : 60_000;
  return { start: date.getTime(), end: date.getTime() + span - 1 };
}

/** An event's time in the server's time zone, to the second. */
export function formatTime(iso: string): string {
  const d = new Date(iso);
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** A whole number above 0 (or 0 when `zero`), undefined for anything else. */
function positiveId(value: unknown, zero = false): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value)) return undefined;
  const id = Number(value);
  return id > 0 || zero ? id : undefined;
}

function linkTo(form: EventForm, extra: Record<string, string>): string {
  const query = new URLSearchParams(Object.entries({ ...form, ...extra }).filter(([, v]) => v !== ''));
  const search = query.toString();
  return search ? `/events?${search}` : '/events';
}
