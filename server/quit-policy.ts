// What vserverd does with the VMs when it stops and starts: each running VM's action on quit
// (save, turn off or shut down), remembered as "running at quit", and the auto-start list that
// the next start turns on.

import { isActive } from '../vmm/state.js';
import type { ShutdownAction, VmRecord } from './vm-record.js';
import type { VmRepository } from './vm-repository.js';
import type { VmSupervisor } from './vm-supervisor.js';

/** How long a guest gets to shut down when vserverd stops with "Shutdown" as the action on quit (within systemd's 90 s stop timeout). */
const SHUTDOWN_ON_QUIT_MS = 60_000;

export class QuitPolicy {
  /** VMs whose auto-start delay has not yet run out. */
  readonly autoStartPending = new Set<string>();

  constructor(private readonly repository: VmRepository, private readonly supervisor: VmSupervisor) {}

  /** vserverd is stopping: applies each running VM's action on quit and remembers which ran. */
  async applyActionsOnQuit(onEach: (vm: VmRecord, action: ShutdownAction, error: Error | null) => void): Promise<void> {
    await Promise.all(this.repository.list().map(async (vm) => {
      const running = isActive(this.supervisor.state(vm));
      // A VM still waiting for its auto-start delay keeps its claim to be started next time.
      if (!this.autoStartPending.has(vm.id)) this.repository.setRunningAtQuit(vm.id, running);
      if (!running) return;
      try {
        if (vm.shutdownAction === 'Save') await this.supervisor.operate(vm, 'save');
        else if (vm.shutdownAction === 'TurnOff') await this.supervisor.operate(vm, 'turnOff');
        else await this.supervisor.operate(vm, 'shutdown', { timeoutMs: SHUTDOWN_ON_QUIT_MS });
        onEach(vm, vm.shutdownAction, null);
      } catch (e) {
        onEach(vm, vm.shutdownAction, e as Error);
      }
    }));
  }

  /** VMs to turn on now that vserverd has started, each with its delay in seconds. */
  autoStartList(): VmRecord[] {
    return this.repository.list().filter((vm) => !isActive(this.supervisor.state(vm))
      && (vm.autoStart === 'Always' || (vm.autoStart === 'IfRunningAtQuit' && vm.runningAtQuit)));
  }

  clearRunningAtQuit(id: string): void {
    this.repository.setRunningAtQuit(id, false);
  }
}
