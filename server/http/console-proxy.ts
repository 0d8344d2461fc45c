// The console WebSockets: /console/vnc carries the VM's QEMU VNC socket (the raw RFB stream, in
// binary messages, for noVNC) and /console/serial its worker's COM1 socket (the scrollback, then
// live output; what the browser sends is typed into the guest). An upgrade needs the session
// cookie or bearer token that was given a one-time ticket (console-tickets.ts), and the ticket,
// and the caller's control right on the VM is checked again here; anything less is refused
// before the upgrade. docs/consoles.md describes the protocol.

import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { Services } from '../api/services.js';
import type { StateChange, VmRecord } from '../machines.js';
import { VmPaths } from '../../vmm/paths.js';
import { isLive } from '../../vmm/state.js';
import { type Caller, authenticate } from './authenticate.js';
import { CLOSE_NOT_ALLOWED, CLOSE_VM_STOPPED, type ConsoleKind, type ConsoleTicket, consoleTickets, holderOf } from './console-tickets.js';
import type { UpgradeHandler } from './websocket.js';

/** A paste, or noVNC's clipboard text; RFB's own messages are tiny. */
const MAX_MESSAGE = 1024 * 1024;
/** A browser that stops reading (or a guest that stops taking input) is dropped rather than buffered for without end. */
const MAX_BUFFERED = 8 * 1024 * 1024;
/** How often, at most, a console's input re-checks that the session lives and still has the control right. */
const RECHECK_MS = 2_000;
/** How long the VM's side may take to read the last input after the browser's socket closed. */
const LET_GO_MS = 5_000;

const NAMES: Record<ConsoleKind, string> = { vnc: 'graphical console', serial: 'serial console (COM1)' };

export function consoleUpgrades(services: Services): Record<string, UpgradeHandler> {
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE });
  const handler = (kind: ConsoleKind): UpgradeHandler => (req, socket, head, caller) => {
    const grant = admit(services, req, kind, caller);
    if ('status' in grant) return refuseWith(socket, grant.status, grant.message);
    const vm = services.machines.get(grant.vmId)!;
    const paths = VmPaths.of(vm.id, services.machines.manager.root);
    const unix = net.connect(kind === 'vnc' ? paths.vnc : paths.console);
    // Whenever the browser's socket closes (the console ended, or ws refused the handshake itself), the VM's goes too.
    socket.once('close', () => letGo(unix));
    let upgraded = false;
    unix.on('error', (error) => {
      if (!upgraded) refuseWith(socket, 503, `the ${NAMES[kind]} of ${vm.name} is not available: ${error.message}`);
      unix.destroy();
    });
    unix.once('connect', () => {
      wss.handleUpgrade(req, socket, head, (ws) => {
        upgraded = true;
        services.events.log('Virtual Machine', 'Information', `${caller.principal.user} opened the ${NAMES[kind]} of ${vm.name}`, caller.principal.user, `VirtualMachine/${vm.id}`);
        bridge(services, { ws, unix, kind, vm, req, caller });
      });
    });
  };
  return { '/console/vnc': handler('vnc'), '/console/serial': handler('serial') };
}

interface Refusal { status: number; message: string }

/** The ticket's grant when this caller may open this console now; otherwise why not. */
function admit(services: Services, req: http.IncomingMessage, kind: ConsoleKind, caller: Caller): ConsoleTicket | Refusal {
  const holder = holderOf(caller);
  if (!holder) return { status: 401, message: 'the consoles need a browser session or a bearer token' };
  const ticket = new URL(req.url ?? '/', 'http://x').searchParams.get('ticket');
  const grant = consoleTickets.redeem(ticket, kind, holder);
  if ('status' in grant) return grant;
  const vm = services.machines.get(grant.vmId);
  if (!vm) return { status: 404, message: 'the virtual machine no longer exists' };
  if (!mayControl(services, caller, vm)) return { status: 403, message: `${caller.principal.user} may not use the consoles of ${vm.name}: that needs the control right` };
  const state = services.machines.state(vm);
  if (!isLive(state)) return { status: 409, message: `${vm.name} is ${state}: its consoles are there only while it runs` };
  return grant;
}

function mayControl(services: Services, caller: Caller, vm: VmRecord): boolean {
  return services.access.rightsOn(caller.principal, `VirtualMachine/${vm.id}`).has('control');
}

/**
 * Ends the VM's socket once what was typed has gone: a half-close, so the worker reads the last
 * input before it sees the end. Destroying it at once loses that input when the worker is slow to
 * read: its next write (the scrollback of a connection it has only now accepted) fails on a peer
 * that has gone, and Node drops the socket with the input still unread.
 */
function letGo(unix: net.Socket): void {
  unix.end();
  setTimeout(() => unix.destroy(), LET_GO_MS).unref();
}

/** Refuses an upgrade with an HTTP answer whose body says why (scripts and tests read it; browsers only see the status). */
function refuseWith(socket: Duplex, status: number, message: string): void {
  if (socket.destroyed) return;
  const body = `${message}\n`;
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Refused'}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

interface Connection { ws: WebSocket; unix: net.Socket; kind: ConsoleKind; vm: VmRecord; req: http.IncomingMessage; caller: Caller }

/** Joins the browser's WebSocket to the VM's socket until either ends, the VM stops or the caller loses the right. */
function bridge(services: Services, { ws, unix, kind, vm, req, caller }: Connection): void {
  let checked = Date.now();
  const close = (code: number, reason: string): void => {
    // A close frame's reason holds at most 123 bytes.
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, Buffer.from(reason).subarray(0, 123).toString());
    unix.destroy();
  };
  const stillAllowed = (): boolean => {
    if (Date.now() - checked < RECHECK_MS) return true;
    checked = Date.now();
    const now = authenticate(req.headers, services.users, services.sessions);
    return now !== null && holderOf(now) === holderOf(caller) && mayControl(services, now, vm);
  };

  unix.on('data', (chunk: Buffer) => {
    if (ws.readyState !== ws.OPEN) return;
    if (ws.bufferedAmount > MAX_BUFFERED) return close(1008, 'the browser did not keep up with the console');
    ws.send(chunk, { binary: true });
  });
  unix.on('close', () => {
    const state = services.machines.get(vm.id) ? services.machines.state(vm) : null;
    close(CLOSE_VM_STOPPED, state && isLive(state) ? `the ${NAMES[kind]} of ${vm.name} closed` : `${vm.name} is ${state ?? 'removed'}`);
  });

  ws.on('message', (data: RawData, isBinary: boolean) => {
    if (!stillAllowed()) return close(CLOSE_NOT_ALLOWED, 'the session or token has ended or no longer has the control right');
    if (kind === 'serial' && !isBinary) return control(ws, data.toString());
    if (unix.writableLength > MAX_BUFFERED) return close(1008, `${vm.name} is not taking input`);
    unix.write(toBuffer(data));
  });
  ws.on('error', () => ws.terminate());
  ws.on('close', () => {
    letGo(unix);
    services.machines.off('state', onState);
  });

  const onState = (change: StateChange): void => {
    if (change.vm.id === vm.id && !isLive(change.state)) close(CLOSE_VM_STOPPED, `${vm.name} is ${change.state}`);
  };
  services.machines.on('state', onState);
}

/**
 * A serial console's control message (a text message, JSON). COM1 carries no window size, so
 * a resize is checked and then has nothing to change; a bad message is answered, not fatal.
 */
function control(ws: WebSocket, text: string): void {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return answerError(ws, 'a text message must be JSON, such as {"type":"resize","cols":80,"rows":24}; send terminal input as binary messages');
  }
  const { type, cols, rows } = (message ?? {}) as Record<string, unknown>;
  if (type !== 'resize') return answerError(ws, `unknown control message type ${JSON.stringify(type)}; the serial console knows "resize"`);
  const size = (n: unknown): boolean => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 1000;
  if (!size(cols) || !size(rows)) return answerError(ws, 'resize needs whole numbers cols and rows from 1 to 1000');
}

function answerError(ws: WebSocket, message: string): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'error', message }));
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}
