// Reads the event log a page at a time, newest first, through the API's GetEvents. GetEvents
// pages forward ("since") or gives the newest entries, and has no time filter, so pages further
// back are read in windows of ids, and times are filtered here. Ids are given in time order,
// which is what lets a read stop at the first entry older than "from".

import type { LoggedEvent } from '../event-log.js';

export interface EventFilter {
  category?: string;
  severity?: string;
  /** An object reference, such as VirtualMachine/<id>. */
  object?: string;
  /** Milliseconds since the epoch, both included. */
  from?: number;
  to?: number;
}

export interface EventPage {
  /** Newest first. */
  events: LoggedEvent[];
  /** Where the next, older page starts (entries with a lower id), or null when nothing older matches. */
  older: number | null;
}

/** GetEvents as the caller: the site passes its own api() so the caller's rights apply. */
export type ReadEvents = (params: Record<string, unknown>) => Promise<LoggedEvent[]>;

/** GetEvents's largest limit, and so the widest window of ids one call can cover. */
const WINDOW = 1000;
/** A filter that matches little would otherwise read the whole log for one page: stop after this many windows and let "older" go on. */
const MAX_WINDOWS = 20;

export async function readPage(read: ReadEvents, filter: EventFilter, before: number | null, size: number): Promise<EventPage> {
  const found: LoggedEvent[] = [];
  let upper = before;
  for (let window = 0; window < MAX_WINDOWS; window++) {
    const { events, next } = await windowBelow(read, filter, upper);
    for (const event of events) {
      const time = Date.parse(event.time);
      if (filter.from !== undefined && time < filter.from) return { events: found, older: null };
      if (!within(filter, time)) continue;
      if (found.length === size) return { events: found, older: found.at(-1)!.id };
      found.push(event);
    }
    if (next === null) return { events: found, older: null };
    upper = next;
  }
  return { events: found, older: upper };
}

/** The entries newer than `after` that the filter allows, newest first (for rows added live). */
export async function readNewer(read: ReadEvents, filter: EventFilter, after: number): Promise<LoggedEvent[]> {
  const events = await read({ ...apiFilter(filter), since: after, limit: WINDOW });
  return events.filter((e) => within(filter, Date.parse(e.time))).reverse();
}

/**
 * Every matching entry with an id below `upper` (the newest when null) down to some id, newest
 * first, and the id to read below next (null: nothing further down can match).
 */
async function windowBelow(read: ReadEvents, filter: EventFilter, upper: number | null): Promise<{ events: LoggedEvent[]; next: number | null }> {
  if (upper === null) {
    const events = await read({ ...apiFilter(filter), newestFirst: true, limit: WINDOW });
    return { events, next: events.length < WINDOW ? null : events.at(-1)!.id };
  }
  if (upper <= 1) return { events: [], next: null };
  // Ascending from `lower`, a limit of the window's width reaches every matching id in (lower, upper).
  const lower = Math.max(0, upper - 1 - WINDOW);
  const events = (await read({ ...apiFilter(filter), since: lower, limit: upper - 1 - lower })).filter((e) => e.id < upper).reverse();
  if (lower === 0 || await olderThanFrom(read, filter, lower)) return { events, next: null };
  return { events, next: lower + 1 };
}

/** Whether every entry at or below id `lower` is older than the filter's "from": the first entry above it is. */
async function olderThanFrom(read: ReadEvents, filter: EventFilter, lower: number): Promise<boolean> {
  if (filter.from === undefined) return false;
  const [first] = await read({ since: lower, limit: 1 });
  return first !== undefined && Date.parse(first.time) < filter.from;
}

function within(filter: EventFilter, time: number): boolean {
  return (filter.from === undefined || time >= filter.from) && (filter.to === undefined || time <= filter.to);
}

function apiFilter(filter: EventFilter): Record<string, unknown> {
  const params: Record<string, unknown> = {};
  if (filter.category) params.category = filter.category;
  if (filter.severity) params.severity = filter.severity;
  if (filter.object) params.object = filter.object;
  return params;
}
