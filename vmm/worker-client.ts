// The other end of a worker's control socket: requests with answers, and the VM's events.

import { EventEmitter } from 'node:events';
import net from 'node:net';
import { onJsonObjects } from './json-lines.js';
import { VmError, type VmStatus, vmErrorCode } from './state.js';
import type { Operation } from './worker/control.js';
import type { ServedDisk } from './worker/layers.js';
import type { MergeRequest, Progress, SnapshotRequest, SnapshotResult } from './worker/machine.js';

export type { MergeRequest, ServedDisk, SnapshotRequest, SnapshotResult };
/** mergeLayer's answer: the bytes copied, and the slot's top afterwards. */
export type { MergeOutcome } from './worker/layers.js';

interface Pending { resolve: (v: unknown) => void; reject: (e: Error) => void }

export class WorkerClient extends EventEmitter<{ state: [VmStatus]; progress: [Progress]; close: [] }> {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  closed = false;

  private constructor(private readonly socket: net.Socket) {
    super();
    onJsonObjects(socket, (message) => this.receive(message));
    socket.on('error', () => { /* reported through close */ });
    socket.on('close', () => {
      this.closed = true;
      for (const p of this.pending.values()) p.reject(new VmError('VM_E_WORKER_GONE', 'the VM worker closed its control connection'));
      this.pending.clear();
      this.emit('close');
    });
  }

  static connect(socketPath: string): Promise<WorkerClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(socketPath);
      socket.once('connect', () => { socket.removeAllListeners('error'); resolve(new WorkerClient(socket)); });
      socket.once('error', reject);
    });
  }

  request<T = VmStatus>(op: Operation, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new VmError('VM_E_WORKER_GONE', 'the VM worker is gone'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify({ id, op, args })}\n`);
    });
  }

  /** Switches the named slots to new empty tops at one instant (docs/vmm.md, "Snapshots"). */
  snapshotDisks(args: SnapshotRequest): Promise<SnapshotResult> {
    return this.request<SnapshotResult>('snapshotDisks', args as unknown as Record<string, unknown>);
  }

  /** Merges a layer of a served chain while the guest runs; progress comes as {event: 'progress', operation: 'merge'}. */
  mergeLayer(args: MergeRequest): Promise<{ bytesMerged: number; top: string }> {
    return this.request('mergeLayer', args as unknown as Record<string, unknown>);
  }

  /** The tops served for each slot, with their chains. */
  disks(): Promise<ServedDisk[]> {
    return this.request<ServedDisk[]>('disks', {});
  }

  close(): void {
    this.socket.destroy();
  }

  private receive(message: Record<string, unknown>): void {
    if (message.event === 'state') this.emit('state', message.status as VmStatus);
    else if (message.event === 'progress') this.emit('progress', message as unknown as Progress);
    else this.settle(message);
  }

  private settle(message: Record<string, unknown>): void {
    const waiting = this.pending.get(message.id as number);
    if (!waiting) return;
    this.pending.delete(message.id as number);
    const error = message.error as { code: unknown; message: string } | undefined;
    if (error) waiting.reject(new VmError(vmErrorCode(error.code), error.message));
    else waiting.resolve(message.result);
  }
}
