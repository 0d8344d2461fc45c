// The event log, as Virtual Server's Event Viewer showed it: category, severity, message, who
// did it and the object concerned. Entries are kept in the catalog and announced to listeners
// (the WebSocket's VirtualServer.OnEventLogged).

import { EventEmitter } from 'node:events';
import { type Catalog, prepared } from './catalog/database.js';
import type { EVENT_CATEGORIES, SEVERITIES } from './api/vocabulary.js';

export type Severity = (typeof SEVERITIES)[number];
export type Category = (typeof EVENT_CATEGORIES)[number];

export interface LoggedEvent {
  id: number;
  time: string;
  category: Category;
  severity: Severity;
  message: string;
  who: string;
  object: string | null;
}

export interface EventQuery { since?: number; limit?: number; category?: string; severity?: string; object?: string; newestFirst?: boolean }

/** Who vserverd itself is, in the log, when no user asked for what happened. */
export const SERVICE = 'vserverd';

export class EventLog extends EventEmitter<{ logged: [LoggedEvent] }> {
  constructor(private readonly db: Catalog) {
    super();
  }

  log(category: Category, severity: Severity, message: string, who: string = SERVICE, object: string | null = null): LoggedEvent {
    const time = new Date().toISOString();
    const { lastInsertRowid } = prepared(this.db, 'INSERT INTO events (time, category, severity, message, who, object) VALUES (?, ?, ?, ?, ?, ?)')
      .run(time, category, severity, message, who, object);
    const event: LoggedEvent = { id: Number(lastInsertRowid), time, category, severity, message, who, object };
    this.emit('logged', event);
    return event;
  }

  query(q: EventQuery, visible: (event: LoggedEvent) => boolean = () => true): LoggedEvent[] {
    const where = ['id > @since', 'id < @below'];
    if (q.category) where.push('category = @category');
    if (q.severity) where.push('severity = @severity');
    if (q.object) where.push('object = @object');
    const limit = q.limit ?? 100;
    const page = prepared(this.db, `SELECT * FROM events WHERE ${where.join(' AND ')} ORDER BY id ${q.newestFirst ? 'DESC' : ''} LIMIT @limit`);
    const found: LoggedEvent[] = [];
    let since = q.since ?? 0;
    let below = Number.MAX_SAFE_INTEGER;
    // Entries the caller may not see are skipped, so pages are read until the limit is filled.
    for (;;) {
      const rows = page.all({ since, below, category: q.category ?? null, severity: q.severity ?? null, object: q.object ?? null, limit }) as LoggedEvent[];
      for (const row of rows) {
        if (visible(row)) found.push(row);
        if (found.length === limit) return found;
      }
      if (rows.length < limit) return found;
      if (q.newestFirst) below = rows.at(-1)!.id;
      else since = rows.at(-1)!.id;
    }
  }
}
