// The API over a WebSocket at /api/ws: the same JSON-RPC calls, plus the events as JSON-RPC
// notifications (VirtualMachine.OnStateChange, Task.OnProgress, VirtualServer.OnEventLogged, and in a
// cluster Cluster.OnHostStateChange and VirtualMachine.OnFailover),
// each sent only to callers who may read the object concerned. The Host (host-check.ts; for the
// consoles' upgrades too) and the browser's Origin are checked before the upgrade, and the caller
// is checked again on every message (a revoked token stops).

import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { handleRpcBody } from '../api/dispatch.js';
import { SERVER_REF } from '../api/objects.js';
import type { Services } from '../api/services.js';
import type { ClusterEventMap, FailoverRecord } from '../cluster/model.js';
import type { LoggedEvent } from '../event-log.js';
import type { StateChange } from '../machines.js';
import type { TaskState } from '../tasks.js';
import type { NetworkChangeEvent } from '../virtual-networks.js';
import { type Caller, authenticate, originAllowed } from './authenticate.js';
import { hostAllowed } from './host-check.js';
import type { Sessions } from './sessions.js';

const MAX_MESSAGE = 1024 * 1024;
/** A client that stops reading is dropped rather than buffered for without end. */
const MAX_BUFFERED = 8 * 1024 * 1024;

/** Another WebSocket endpoint (the consoles), given a request that passed the Origin and caller checks. */
export type UpgradeHandler = (req: http.IncomingMessage, socket: Duplex, head: Buffer, caller: Caller) => void;

export function attachWebSocket(server: http.Server, services: Services, allowed: { origins: string[]; hosts: string[] }, others: Record<string, UpgradeHandler> = {}): WebSocketServer {
  const sessions = services.sessions;
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const pathname = new URL(req.url ?? '/', 'http://x').pathname;
    const other = Object.hasOwn(others, pathname) ? others[pathname] : null;
    if (!hostAllowed(req.headers, allowed.hosts, req.socket.localPort)) return refuse(socket, 421, 'Misdirected Request');
    if (pathname !== '/api/ws' && !other) return refuse(socket, 404, 'Not Found');
    if (!originAllowed(req.headers, allowed.origins)) return refuse(socket, 403, 'Forbidden');
    const caller = authenticate(req.headers, services.users, sessions);
    if (!caller) return refuse(socket, 401, 'Unauthorized');
    if (other) return other(req, socket, head, caller);
    wss.handleUpgrade(req, socket, head, (ws) => serve(ws, req, caller, services, sessions));
  });
  return wss;
}

export function refuse(socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

function serve(ws: WebSocket, req: http.IncomingMessage, first: Caller, services: Services, sessions: Sessions): void {
  let caller = first;
  const current = (): Caller | null => authenticate(req.headers, services.users, sessions);
  const canRead = (object: string): boolean => services.access.canRead(caller.principal, object);
  const notify = (method: string, params: object): void => {
    if (ws.readyState !== ws.OPEN) return;
    if (ws.bufferedAmount > MAX_BUFFERED) {
      ws.close(1008, 'too slow to read the events');
      return;
    }
    ws.send(JSON.stringify({ jsonrpc: '2.0', method, params }));
  };

  const onState = ({ vm, state, previous, status }: StateChange): void => {
    const object = `VirtualMachine/${vm.id}`;
    if (canRead(object)) notify('VirtualMachine.OnStateChange', { vm: object, name: vm.name, state, previous, reason: status?.crashed?.reason ?? status?.stopReason ?? null });
  };
  const onProgress = (task: TaskState): void => {
    if (canRead(task.object ?? SERVER_REF)) {
      notify('Task.OnProgress', { task: `Task/${task.id}`, description: task.description, percentCompleted: task.percent, isComplete: task.finished !== null, error: task.error });
    }
  };
  const onLogged = (event: LoggedEvent): void => {
    if (services.access.canSee(caller.principal, event)) notify('VirtualServer.OnEventLogged', event);
  };
  const onNetworkChange = ({ network, change }: NetworkChangeEvent): void => {
    const object = `VirtualNetwork/${network.id}`;
    if (canRead(object)) notify('VirtualNetwork.OnChange', { network: object, name: network.name, change });
  };
  const { cluster } = services;
  const onHostState = ({ host, state, previous }: ClusterEventMap['hostState'][0]): void => {
    if (cluster && canRead(SERVER_REF)) notify('Cluster.OnHostStateChange', { cluster: `Cluster/${cluster.name}`, host: `Host/${host}`, name: host, state, previous });
  };
  const onFailover = (f: FailoverRecord): void => {
    const object = `VirtualMachine/${f.vm}`;
    if (canRead(object)) {
      notify('VirtualMachine.OnFailover', {
        vm: object, name: f.vmName, failover: f.id, from: f.from, to: f.to, reason: f.reason, seconds: f.seconds,
        detected: f.detected, fenced: f.fenced, started: f.started, running: f.running, error: f.error,
      });
    }
  };
  services.machines.on('state', onState);
  services.networks.on('change', onNetworkChange);
  services.tasks.on('progress', onProgress);
  services.events.on('logged', onLogged);
  cluster?.events.on('hostState', onHostState);
  cluster?.events.on('failover', onFailover);
  ws.on('close', () => {
    services.machines.off('state', onState);
    services.networks.off('change', onNetworkChange);
    services.tasks.off('progress', onProgress);
    services.events.off('logged', onLogged);
    cluster?.events.off('hostState', onHostState);
    cluster?.events.off('failover', onFailover);
  });

  const answer = async (text: string): Promise<void> => {
    const now = current();
    if (!now) {
      ws.close(4401, 'the token or session is no longer valid');
      return;
    }
    caller = now;
    const response = await handleRpcBody(text, caller.principal, services);
    if (response !== null && ws.readyState === ws.OPEN) ws.send(JSON.stringify(response));
  };
  ws.on('message', (data, isBinary) => void answer(isBinary ? '' : data.toString()));
}
