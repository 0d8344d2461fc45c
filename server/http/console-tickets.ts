// One-time tickets for the console WebSockets. A browser cannot put a CSRF token on a
// WebSocket upgrade, so the page first asks for a ticket by a CSRF-checked POST; the upgrade
// then presents it. A script with a bearer token asks with VirtualMachine.CreateConsoleTicket
// and presents the ticket with the same token. A ticket is random, bound to the session or
// token, user, VM and kind of console that asked for it, lasts a few seconds and is spent by
// its first presentation, whatever the outcome: a ticket seen twice (copied from a log, say)
// opens nothing.

import crypto from 'node:crypto';
import type { Caller } from './authenticate.js';

export const CONSOLE_KINDS = ['vnc', 'serial'] as const;
export type ConsoleKind = (typeof CONSOLE_KINDS)[number];

/** Close codes a console ends with, besides WebSocket's own (docs/consoles.md). */
export const CLOSE_VM_STOPPED = 4001;
export const CLOSE_NOT_ALLOWED = 4401;

/** Long enough for the page to open its WebSocket, short enough to be useless later. */
export const TICKET_SECONDS = 30;
/** Unspent tickets kept at most; the oldest give way (each needs a signed-in request to make). */
const MAX_TICKETS = 10_000;

export interface ConsoleTicket {
  user: string;
  /** The session or token that asked for it, and alone may present it: holderOf(caller). */
  holder: string;
  vmId: string;
  kind: ConsoleKind;
  expires: number;
}

/** Who holds a caller's tickets: its browser session, else its bearer token. */
export function holderOf(caller: Caller): string | null {
  if (caller.session) return `session:${caller.session.id}`;
  return caller.principal.tokenId ? `token:${caller.principal.tokenId}` : null;
}

/** Why a presented ticket opens nothing: the HTTP status of the refused upgrade and a sentence. */
export interface TicketRefusal { status: 401 | 403; message: string }

export class ConsoleTickets {
  private readonly tickets = new Map<string, ConsoleTicket>();

  /** @param now the clock, in milliseconds (a test's own, to see a ticket expire without waiting) */
  constructor(private readonly now: () => number = Date.now) {}

  /** A new ticket for the grant, with the path of the WebSocket that takes it. */
  issue(grant: Omit<ConsoleTicket, 'expires'>): { ticket: string; url: string; expiresInSeconds: number } {
    this.prune();
    const ticket = crypto.randomBytes(32).toString('base64url');
    this.tickets.set(ticket, { ...grant, expires: this.now() + TICKET_SECONDS * 1000 });
    if (this.tickets.size > MAX_TICKETS) this.tickets.delete(this.tickets.keys().next().value!);
    return { ticket, url: `/console/${grant.kind}?ticket=${ticket}`, expiresInSeconds: TICKET_SECONDS };
  }

  /** Spends the ticket and returns its grant, or why it may not open a `kind` console for this holder. */
  redeem(ticket: string | null, kind: ConsoleKind, holder: string): ConsoleTicket | TicketRefusal {
    if (!ticket) return { status: 401, message: 'no console ticket: ask for one with POST /vms/ID/console/ticket, or VirtualMachine.CreateConsoleTicket with a token' };
    const found = this.tickets.get(ticket);
    this.tickets.delete(ticket);
    if (!found) return { status: 401, message: 'the console ticket is unknown or already used: ask for a new one' };
    if (found.expires <= this.now()) return { status: 401, message: `the console ticket has expired (tickets last ${TICKET_SECONDS} s): ask for a new one` };
    if (found.holder !== holder) return { status: 403, message: 'the console ticket was given to another session or token' };
    if (found.kind !== kind) return { status: 403, message: `the console ticket is for the ${found.kind} console, not the ${kind} console` };
    return found;
  }

  private prune(): void {
    const now = this.now();
    for (const [ticket, grant] of this.tickets) if (grant.expires <= now) this.tickets.delete(ticket);
  }
}

/** vserverd's one store: the site issues from it, the console WebSockets redeem from it. */
export const consoleTickets = new ConsoleTickets();
