// What vserver asks the host about processes: /proc/PID/stat read once, liveness, command
// lines. Every layer uses it (the VHD engine's locks, vhdmount's helpers, the VMM's workers,
// vserverd's CPU figures), so it lives below them all, in host/.

import fs from 'node:fs';

/** Linux's USER_HZ: the clock ticks in which /proc/PID/stat counts times. */
export const CLOCK_TICKS_PER_SECOND = 100;

/**
 * The fields of /proc/PID/stat after the command name, or null when there is no such process.
 * Index 0 is field 3 (the state), so field N is at index N - 3: utime 14, stime 15, starttime 22.
 * The name, in parentheses, may hold spaces and ")" itself: the fields start after the last ")".
 */
function procStat(pid: number): string[] | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return null;
  }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** When a process started, in clock ticks since boot (field 22), or null when it is gone: with the pid, it names one process even after the pid is reused. */
export function processStartTicks(pid: number): string | null {
  return procStat(pid)?.[19] ?? null;
}

/** The CPU time a process has used, user and system (fields 14 and 15), in clock ticks; null when it is gone. */
export function cpuTicks(pid: number): number | null {
  const stat = procStat(pid);
  return stat ? Number(stat[11]) + Number(stat[12]) : null;
}

/** Whether a process runs. A zombie does not: the processes vhdmount leaves behind are reaped by whoever adopted them, maybe late. */
export function isAlive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== null && stat[0] !== 'Z';
}

/** The command line of a process, to tell ours from a later process that reused its pid. */
export function commandLine(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** Processes (other than this one) whose command line has an argument containing `text`. */
export function processesMentioning(text: string): number[] {
  return fs.readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid)
    .map(Number)
    .filter((pid) => isAlive(pid) && commandLine(pid).some((arg) => arg.includes(text)));
}
