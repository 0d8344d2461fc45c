// A VM's power task cut by a restart of vserverd (kill -9, a crash) went on in the VM's worker,
// which outlives vserverd: once the workers are reattached, such a task is settled from the
// state its VM reaches, not reported failed for a VM that did what was asked.

import type { VmState } from '../vmm/state.js';
import type { Machines } from './machines.js';
import { SERVICE_STOPPED, type Settlement, type TaskState } from './tasks.js';

/** For each kind of VM task (the worker's operation), the states that mean it was done, and how to say so. */
const SETTLED_BY_STATE: Record<string, { done: readonly VmState[]; says: string }> = {
  turnOn: { done: ['Running', 'Paused'], says: 'the VM is running (reattached)' },
  save: { done: ['Saved'], says: 'the VM is saved' },
  turnOff: { done: ['TurnedOff', 'Saved'], says: 'the VM is turned off' },
  shutdown: { done: ['TurnedOff'], says: 'the VM is turned off' },
};

/** How long a VM may stay between states (TurningOn, Saving...) before its task is given up. */
const SETTLE_TIMEOUT_MS = 120_000;
const VM_OBJECT = /^VirtualMachine\/(.+)$/;

/** The settlement of an interrupted task, or null when nothing but VM_E_SERVICE_STOPPED can be said. */
export function settleFromVm(task: TaskState, machines: Machines): Promise<Settlement> | null {
  const rule = task.kind ? SETTLED_BY_STATE[task.kind] : undefined;
  const vm = rule && task.object ? machines.get(VM_OBJECT.exec(task.object)?.[1] ?? '') : null;
  if (!rule || !vm) return null;
  return machines.settledState(vm, SETTLE_TIMEOUT_MS).then((state): Settlement => (rule.done.includes(state)
    ? { done: `vserverd restarted while the task ran; ${rule.says}` }
    : { error: SERVICE_STOPPED(`; the VM is ${state}`) }));
}
