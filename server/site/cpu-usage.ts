// A running VM's CPU use, as Master Status shows it: the share of one host processor its QEMU
// process used between two looks (VMs have one processor, so 100% is one host core's worth).

import fs from 'node:fs';

/** Linux's USER_HZ: /proc/PID/stat counts CPU time in these ticks. */
const TICKS_PER_SECOND = 100;

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
    const value = Math.min(100, Math.max(0, Math.round((ticks - previous.ticks) / TICKS_PER_SECOND / ((at - previous.at) / 1000) * 100)));
    this.last.set(pid, value);
    return value;
  }
}

function cpuTicks(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime: fields 14 and 15 of stat, 11 and 12 after the command name.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}
