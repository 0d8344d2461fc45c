// A VM's state as Virtual Server named it (VMVMState), and the status a worker reports. Each
// operation moves through the same sequence of states Virtual Server announced for it.

import { VHD_ERROR_CODES, type VhdErrorCode } from '../storage/vhd/errors.js';

export const VM_STATES = ['TurnedOff', 'Saved', 'TurningOn', 'Restoring', 'Running', 'Paused', 'Saving', 'TurningOff'] as const;
export type VmState = (typeof VM_STATES)[number];

/** States in which QEMU is up; the others have no QEMU (and, once settled, no worker). */
/** The states in which a VM runs (paused or not): it has a screen, consoles and an uptime. */
export const LIVE_STATES: readonly VmState[] = ['Running', 'Paused'];

export function isLive(state: VmState): boolean {
  return LIVE_STATES.includes(state);
}

export function isActive(state: VmState): boolean {
  return state !== 'TurnedOff' && state !== 'Saved';
}

export interface VmStatus {
  id: string;
  name: string;
  state: VmState;
  /** The execution engine in use ("kvm" or "tcg") and why it was chosen; set once the VM has been turned on. */
  engine?: string;
  engineReason?: string;
  workerPid?: number;
  qemuPid?: number;
  /** When the VM last became Running from a turn on or a restore (pause and reset keep it): its uptime counts from here. */
  runningSince?: string;
  /** Set when the VM stopped without being asked to: QEMU or its worker died. */
  crashed?: { reason: string; at: string };
  /** Set when the worker fenced the VM (stopped its writes, killed QEMU): its run licence ended. */
  fenced?: { reason: string; at: string };
  /** Why the VM last stopped, when it stopped normally ("turned off", "guest shut down", ...). */
  stopReason?: string;
  since: string;
  /** The disks the worker serves (or served last): each slot's top and its chain, top first. Updated before a switched disk is written. */
  disks?: Array<{ slot: string; file: string; chain: string[] }>;
}

/** The VMM's own error codes (its workers included); server/error-catalogue.ts says what each means. */
/**
 * How a snapshot saved a running VM's memory, best first: QEMU's background snapshot (the guest
 * held only while its device state is taken), a live save (memory copied while the guest runs,
 * held for the last pass), a paused save (held for the whole save).
 */
export const MEMORY_METHODS = ['background-snapshot', 'live-save', 'paused-save'] as const;
export type MemoryMethod = (typeof MEMORY_METHODS)[number];

export const VM_ERROR_CODES = [
  'VM_E_VM_RUNNING', 'VM_E_VM_NOT_RUNNING', 'VM_E_BUSY', 'VM_E_TURNED_OFF', 'VM_E_START_FAILED', 'VM_E_SAVE_FAILED', 'VM_E_RESTORE_FAILED',
  'VM_E_QEMU_REFUSED', 'VM_E_WORKER_GONE', 'VM_E_MAC_IN_USE', 'VM_E_MEDIA_NOT_FOUND', 'VM_E_PORT_FILE', 'VM_E_CONFIG_INVALID',
  'VM_E_INVALID_PARAMS', 'VM_E_BAD_REQUEST', 'VM_E_NETWORK_FAILED', 'VM_E_LICENCE_LOST', 'VM_E_INTERNAL',
] as const;
/** What a VmError carries: the VMM's own codes, or the VHD engine's when a worker's disk refused (one locked by another VM). */
export type VmErrorCode = (typeof VM_ERROR_CODES)[number] | VhdErrorCode;

/** A code read from a worker's answer: one neither the VMM nor the VHD engine declares is VM_E_INTERNAL. */
export function vmErrorCode(code: unknown): VmErrorCode {
  return [...VM_ERROR_CODES, ...VHD_ERROR_CODES].find((known) => known === code) ?? 'VM_E_INTERNAL';
}

export class VmError extends Error {
  constructor(readonly code: VmErrorCode, message: string) {
    super(message);
    this.name = 'VmError';
  }
}
