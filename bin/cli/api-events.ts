// vsctl events: vserverd's event log, read once with GetEvents or followed over the WebSocket.

import { EVENT_CATEGORIES, SEVERITIES } from '../../server/api/schema.js';
import { fieldOf } from '../../server/api/fields.js';
import { ApiCallError, openNotifications } from './api-client.js';
import { clientFor, CONNECTION_OPTIONS, parseValue, printJson } from './api-call.js';
import { parseCount } from './api-output.js';
import type { Command, ParsedArgs } from './command.js';
import { UsageError } from './terminal.js';

interface LoggedEvent { id: number; time: string; category: string; severity: string; message: string; who: string; object: string | null }

function printEvent(args: ParsedArgs, event: LoggedEvent, lines: boolean): void {
  if (args.json && lines) console.log(JSON.stringify(event));
  else console.log(`${String(event.id).padStart(6)}  ${event.time}  ${event.severity.padEnd(11)}  ${event.category.padEnd(15)}  ${event.who}: ${event.message}`);
}

/** "a, b or c". */
function inWords(values: readonly string[]): string {
  return values.length > 1 ? `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}` : values.join('');
}

/** The most events one GetEvents call returns, as its declaration says. */
const EVENT_PAGE = fieldOf('VirtualServer.GetEvents', 'limit').max ?? Infinity;

export const eventsCommand: Command = {
  name: 'events',
  usage: 'events [--since ID] [--limit N] [--category C] [--severity S] [--object REF] [--follow]',
  summary: 'Print vserverd\'s event log (Virtual Server\'s Event Viewer), oldest first; --follow keeps printing new events until Ctrl-C.',
  details: [
    'Each line: id, time, severity, category, who, message. Without --follow: the events after --since (the latest',
    'ones when omitted), at most --limit of them (vserverd\'s default is 100). With --follow: every event',
    'after --since, then each new one as it is logged (only new ones when --since is omitted), read from the WebSocket',
    '(/api/ws). With --json the events are a JSON array, or with --follow one JSON object per line.',
  ].join('\n'),
  positionals: { min: 0, max: 0 },
  options: {
    since: { type: 'string', valueName: 'ID', description: 'only events with an id above ID' },
    limit: { type: 'string', valueName: 'N', description: 'at most N events (1 to 1000; not with --follow)' },
    category: { type: 'string', valueName: 'C', description: inWords(EVENT_CATEGORIES.map((c) => `"${c}"`)) },
    severity: { type: 'string', valueName: 'S', description: inWords(SEVERITIES) },
    object: { type: 'string', valueName: 'REF', description: 'only events about this object reference' },
    follow: { type: 'boolean', short: 'f', description: 'keep printing new events as they are logged, until Ctrl-C' },
    ...CONNECTION_OPTIONS,
  },
  async run(args) {
    const v = args.values;
    const filter: Record<string, unknown> = {};
    if (v.since !== undefined) filter.since = parseCount(v.since, '--since');
    if (v.limit !== undefined) {
      if (v.follow) throw new UsageError('--limit does not go with --follow: --since says where to start');
      filter.limit = parseCount(v.limit, '--limit', 1);
      if (Number(filter.limit) > EVENT_PAGE) throw new UsageError(`--limit: at most ${EVENT_PAGE}`);
    }
    for (const key of ['category', 'severity'] as const) {
      if (v[key] !== undefined) filter[key] = parseValue(`--${key}`, String(v[key]), fieldOf('VirtualServer.GetEvents', key).type);
    }
    if (v.object !== undefined) filter.object = v.object;
    const client = clientFor(v);
    if (!v.follow) {
      // Without --since, the latest events (as an event viewer opens), still printed oldest first.
      const events = filter.since === undefined
        ? (await client.call<LoggedEvent[]>('VirtualServer.GetEvents', { ...filter, newestFirst: true })).reverse()
        : await client.call<LoggedEvent[]>('VirtualServer.GetEvents', filter);
      if (args.json) printJson(events);
      else for (const e of events) printEvent(args, e, false);
      return 0;
    }
    // Listen first, so that nothing logged while the log is read is missed; ids say what was shown.
    const pending: LoggedEvent[] = [];
    let last = Number(filter.since ?? 0);
    let live = false;
    const matches = (e: LoggedEvent): boolean => e.id > last && (!filter.category || e.category === filter.category)
      && (!filter.severity || e.severity === filter.severity) && (!filter.object || e.object === filter.object);
    const show = (e: LoggedEvent): void => {
      if (!matches(e)) return;
      last = e.id;
      printEvent(args, e, true);
    };
    const notifications = await openNotifications(client, (method, params) => {
      if (method !== 'VirtualServer.OnEventLogged') return;
      if (live) show(params as unknown as LoggedEvent);
      else pending.push(params as unknown as LoggedEvent);
    });
    const stop = (): void => notifications.close();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      if (filter.since !== undefined) {
        for (;;) {
          const page = await client.call<LoggedEvent[]>('VirtualServer.GetEvents', { ...filter, since: last, limit: EVENT_PAGE });
          for (const e of page) show(e);
          if (page.length < EVENT_PAGE) break;
        }
      }
    } catch (e) {
      notifications.close();
      throw e;
    }
    live = true;
    for (const e of pending.splice(0)) show(e);
    const why = await notifications.closed;
    if (why) throw new ApiCallError('VSCTL_E_DISCONNECTED', why);
    return 0;
  },
};
