// A process's /proc/PID/stat, read once for every part of vserver that asks about processes
// (lock owners, vhdmount's helpers, QEMU's uptime and CPU time). It lives at the bottom layer,
// beside progress.ts, because the VHD engine needs it too.

import fs from 'node:fs';

/** Linux's USER_HZ: the clock ticks in which /proc/PID/stat counts times. */
export const CLOCK_TICKS_PER_SECOND = 100;

/**
 * The fields of /proc/PID/stat after the command name, or null when there is no such process.
 * Index 0 is field 3 (the state), so field N is at index N - 3: utime 11, stime 12, starttime 19.
 * The name, in parentheses, may hold spaces and ")" itself: the fields start after the last ")".
 */
export function procStat(pid: number): string[] | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}
