// A VM's state as Virtual Server named it (VMVMState), and the status a worker reports. Each
// operation moves through the same sequence of states Virtual Server announced for it.

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
  /** Why the VM last stopped, when it stopped normally ("turned off", "guest shut down", ...). */
  stopReason?: string;
  since: string;
}

export class VmError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'VmError';
  }
}
