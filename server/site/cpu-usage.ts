// A running VM's CPU use, as Master Status shows it: the share of one host processor its QEMU
// process used between two looks (VMs have one processor, so 100% is one host core's worth).

import { CLOCK_TICKS_PER_SECOND, cpuTicks } from '../../host/process.js';

export class CpuUsage {
  private readonly samples = new Map<number, { ticks: number; at: number }>();
  private readonly last = new Map<number, number>();

  /** Percent of one processor since the previous look at `pid`; null on the first look or when the process is gone. */
  percent(pid: number): number | null {
    const ticks = cpuTicks(pid);
    const at = Date.now();
    if (ticks === null) {
      this.samples.delete(pid);
      this.last.delete(pid);
      return null;
    }
    const previous = this.samples.get(pid);
    // Looks in quick succession (several browsers) share the last figure rather than measure noise.
    if (previous && at - previous.at < 500) return this.last.get(pid) ?? null;
    this.samples.set(pid, { ticks, at });
    if (!previous) return null;
    const value = Math.min(100, Math.max(0, Math.round((ticks - previous.ticks) / CLOCK_TICKS_PER_SECOND / ((at - previous.at) / 1000) * 100)));
    this.last.set(pid, value);
    return value;
  }
}
