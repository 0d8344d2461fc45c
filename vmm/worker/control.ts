// The worker's control socket: one JSON object per line. A request {"id", "op", "args"} gets
// {"id", "result"} or {"id", "error": {"code", "message"}}; every client also receives the
// VM's events: {"event": "state", "status"} and {"event": "progress", "operation", "percent"}.

import net from 'node:net';
import { VhdError } from '../../storage/vhd/errors.js';
import { onLines } from '../json-lines.js';
import { listenPrivately } from './private-socket.js';
import { QmpError } from '../qmp.js';
import { VmError, type VmErrorCode, type VmStatus } from '../state.js';
import type { MergeRequest, SnapshotRequest, VirtualMachine } from './machine.js';

export const OPERATIONS = ['status', 'turnOn', 'turnOff', 'shutdown', 'save', 'pause', 'resume', 'reset', 'screenshot', 'type', 'scrollback', 'serialOutput', 'setLink', 'snapshotDisks', 'mergeLayer', 'disks'] as const;
export type Operation = (typeof OPERATIONS)[number];

/**
 * A failed operation as the control socket answers it. What is neither the VMM's error, the VHD
 * engine's (a disk another VM holds) nor QEMU's refusal (a file system error, a bug) is VM_E_INTERNAL with its cause in the message: a Node
 * errno code such as ENOENT is no error name.
 */
export function controlError(e: unknown): { code: VmErrorCode; message: string } {
  if (e instanceof VmError) return { code: e.code, message: e.message };
  if (e instanceof VhdError) return { code: e.code, message: e.message };
  if (e instanceof QmpError) return { code: 'VM_E_QEMU_REFUSED', message: e.message };
  return { code: 'VM_E_INTERNAL', message: `the VM worker failed: ${(e as Error)?.message ?? String(e)}` };
}

export interface ControlRequest { id: number; op: Operation; args?: Record<string, unknown> }

const MAX_LINE = 1024 * 1024;

export class ControlServer {
  private readonly clients = new Set<net.Socket>();
  private server: net.Server | null = null;

  constructor(private readonly vm: VirtualMachine) {
    vm.on('progress', (p) => this.broadcast({ event: 'progress', ...p }));
  }

  /** Tells every client of a new state; the worker calls it once the state is in status.json. */
  announceState(status: VmStatus): void {
    this.broadcast({ event: 'state', status });
  }

  async listen(socketPath: string): Promise<void> {
    this.server = net.createServer((client) => this.serve(client));
    await listenPrivately(this.server, socketPath);
  }

  /** Sends what is still queued, then closes. */
  async close(): Promise<void> {
    this.server?.close();
    await Promise.all([...this.clients].map((c) => new Promise<void>((r) => c.end(r))));
  }

  private serve(client: net.Socket): void {
    this.clients.add(client);
    onLines(client, (line) => void this.answer(client, line), MAX_LINE);
    client.on('close', () => this.clients.delete(client));
    client.on('error', () => client.destroy());
  }

  private async answer(client: net.Socket, line: string): Promise<void> {
    let request: ControlRequest;
    try {
      request = JSON.parse(line) as ControlRequest;
    } catch {
      send(client, { id: null, error: { code: 'VM_E_BAD_REQUEST', message: 'a request is one JSON object per line' } });
      return;
    }
    try {
      send(client, { id: request.id, result: await this.perform(request) });
    } catch (e) {
      send(client, { id: request.id, error: controlError(e) });
    }
  }

  private perform({ op, args = {} }: ControlRequest): Promise<unknown> | unknown {
    const vm = this.vm;
    switch (op) {
      case 'status': return vm.status;
      case 'turnOn': return vm.turnOn();
      case 'turnOff': return vm.turnOff();
      case 'shutdown': return vm.shutdown(typeof args.timeoutMs === 'number' ? args.timeoutMs : undefined);
      case 'save': return vm.save();
      case 'pause': return vm.pause();
      case 'resume': return vm.resume();
      case 'reset': return vm.reset();
      case 'screenshot': return vm.screenshot().then((png) => ({ png: png.toString('base64') }));
      case 'type':
        vm.console.type(String(args.text ?? ''));
        return {};
      case 'scrollback': return { text: vm.console.scrollback().toString('utf8') };
      case 'serialOutput': return vm.console.read(typeof args.since === 'number' ? args.since : undefined);
      case 'setLink': return vm.setLink(Number(args.index), args.up === true).then(() => ({}));
      case 'snapshotDisks': return vm.snapshotDisks(args as unknown as SnapshotRequest);
      case 'mergeLayer': return vm.mergeLayer(args as unknown as MergeRequest);
      case 'disks': return vm.servedDisks();
      default: throw new VmError('VM_E_BAD_REQUEST', `unknown operation "${String(op)}" (known: ${OPERATIONS.join(', ')})`);
    }
  }

  private broadcast(message: object): void {
    for (const client of this.clients) send(client, message);
  }
}

function send(client: net.Socket, message: object): void {
  if (!client.destroyed) client.write(`${JSON.stringify(message)}\n`);
}
