// What vserverd knows of a registered VM, and the events its VM modules announce; shared by the
// repository (vm-repository.ts), the supervisor (vm-supervisor.ts) and the quit policy.

import type { EventEmitter } from 'node:events';
import type { AUTO_START, SHUTDOWN_ACTIONS, UNDO_ACTIONS } from './api/vocabulary.js';
import type { VmConfig } from '../vmm/config.js';
import type { VmState, VmStatus } from '../vmm/state.js';
import type { Progress } from '../vmm/worker/machine.js';

export type AutoStart = (typeof AUTO_START)[number];
export type ShutdownAction = (typeof SHUTDOWN_ACTIONS)[number];
export type UndoAction = (typeof UNDO_ACTIONS)[number];

export interface VmRecord {
  id: string;
  name: string;
  vmcPath: string;
  config: VmConfig;
  notes: string;
  autoStart: AutoStart;
  autoStartDelay: number;
  shutdownAction: ShutdownAction;
  runningAtQuit: boolean;
  /** Whether the VM writes to undo disks (.vud) instead of its disks; vserverd's setting, not the .vmc's. */
  undoable: boolean;
  /** What happens to the undo disks when the guest shuts itself down (and the default of TurnOff's choice). */
  undoAction: UndoAction;
  created: string;
}

export interface StateChange { vm: VmRecord; state: VmState; previous: VmState | null; status: VmStatus | null }

export type MachineEventMap = { state: [StateChange]; progress: [string, Progress]; cleaned: [message: string, object: string | null] };
export type MachineEvents = EventEmitter<MachineEventMap>;

/** The registered VMs, as the supervisor and the quit policy read them. */
export interface VmRecords {
  get(id: string): VmRecord | null;
  list(): VmRecord[];
}
