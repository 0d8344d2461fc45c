// vhdmount: a VHD's partition mounted on the host, as Virtual Server's VHD Mount did.
//
//   VHD (or its undo child) --NBD over a private unix socket--> "vsctl vhd serve"
//     --> the whole disk as a host file (nbdfuse) or block device (kernel nbd-client)
//     --> a loop device over the partition's byte range --> mount
//
// The partition's range is computed here from the MBR/GPT, because the loop driver on hosts
// like ours creates no partition nodes. In undo mode (the default) writes go to a
// differencing child, merged into the VHD at unmount (commit) or deleted (discard). Every step
// is written to the mount's record first, so an interrupted mount or unmount is undone (or
// finished) by running "vhdmount --unmount" again, and a failed mount undoes itself.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LongOperationOptions } from '../progress.js';
import { createDifferencing, lockHolder, mergeIntoParent } from '../vhd/index.js';
import { commandLine, isAlive, processesMentioning } from '../../host/process.js';
import {
  HostError, attachLoop, detachLoop, filesystemType, freeNbdDevice, fuseAvailable, kernelNbdAvailable, loopBackingFile, mountAt,
  runTool, waitFor,
} from './host.js';
import { type Partition, type PartitionTable, readPartitionTable } from './partitions.js';
import { type MountMethod, type MountMode, type MountRecord, allRecords, newRecord, recordDir, removeRecord, saveRecord } from './records.js';

export { HostError } from './host.js';
export type { MountRecord, MountMode } from './records.js';

export interface MountOptions {
  /** Partition number (1-based); the first partition by default, the whole disk when there is no table. */
  partition?: number;
  mode: MountMode;
  /** Aborting stops the mount at the next step and undoes what was done. */
  signal?: AbortSignal;
  onStep?: (message: string) => void;
}

export type UnmountAction = 'commit' | 'discard';

const EXPORT_NAME = 'disk';
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 120_000;
/** How long nbdfuse gets to exit by itself after its FUSE mount is gone. */
const HELPER_GRACE_MS = 5_000;
const VSCTL = fileURLToPath(new URL('../../bin/vsctl.js', import.meta.url));

/** Where undo mode keeps the writes: beside the VHD, so it has the VHD's space and survives reboots. */
export function undoFileFor(file: string): string {
  return path.join(path.dirname(file), `${path.basename(file, path.extname(file))}.vhdmount-undo.vhd`);
}

export function chooseMethod(): MountMethod {
  const forced = process.env.VHDMOUNT_METHOD;
  if (forced === 'fuse' || forced === 'kernel') return forced;
  if (forced) throw new HostError(`VHDMOUNT_METHOD must be fuse or kernel, not "${forced}"`);
  if (kernelNbdAvailable()) return 'kernel';
  if (fuseAvailable()) return 'fuse';
  throw new HostError('this host can show a disk neither through the kernel NBD client (needs the nbd module and the nbd-client package) '
    + 'nor through FUSE (needs /dev/fuse and the libnbd-bin and fuse3 packages)');
}

export async function mountVhd(file: string, mountPoint: string, options: MountOptions): Promise<MountRecord> {
  requireRoot();
  const vhd = path.resolve(file);
  if (!fs.existsSync(vhd)) throw new HostError(`${vhd} does not exist`);
  const target = existingFolder(mountPoint);
  const inUse = mountAt(target);
  if (inUse) throw new HostError(`${target} is in use: ${inUse.source} (${inUse.fsType}) is mounted there`);
  for (const r of allRecords()) {
    if (r.file === vhd) throw new HostError(`${vhd} is already mounted at ${r.mountPoint} (vhdmount --list)`);
    if (r.mountPoint === target) throw new HostError(`${target} is in use by vhdmount for ${r.file} (vhdmount --list)`);
  }
  const writer = lockHolder(vhd);
  if (writer) throw new HostError(`${vhd} is open for writing by ${writer.holder}; it cannot be mounted while it changes`);
  const undoFile = options.mode === 'undo' ? undoFileFor(vhd) : undefined;
  if (undoFile && fs.existsSync(undoFile)) {
    throw new HostError(`${undoFile} exists: an undo disk left by an earlier mount. Merge it (vsctl vhd merge ${undoFile}) or delete it, then mount again`);
  }

  const step = options.onStep ?? (() => {});
  const signal = options.signal;
  const record = newRecord({ file: vhd, mountPoint: target, mode: options.mode, partition: null, method: chooseMethod() });
  try {
    if (undoFile) {
      step(`creating the undo disk ${undoFile}`);
      record.undoFile = undoFile;
      saveRecord(record);
      await createDifferencing(undoFile, vhd);
    }
    signal?.throwIfAborted();
    step('starting the NBD server');
    await startServer(record, undoFile ?? vhd, signal);
    step(record.method === 'fuse' ? 'showing the disk as a file through FUSE (nbdfuse)' : 'attaching the kernel NBD client');
    if (record.method === 'fuse') await attachFuse(record, signal);
    else attachKernel(record);
    signal?.throwIfAborted();

    const { partition, table } = choosePartition(record.diskPath!, options.partition);
    record.partition = partition?.number ?? null;
    const offset = partition?.offset ?? 0;
    const size = partition?.size ?? fs.statSync(record.diskPath!).size;
    step(partition ? `attaching a loop device to partition ${partition.number} (${table.scheme.toUpperCase()}, ${size} bytes at offset ${offset})` : 'attaching a loop device to the whole disk');
    record.loopDevice = attachLoop(record.diskPath!, offset, size, options.mode === 'read-only');
    saveRecord(record);
    signal?.throwIfAborted();

    step(`mounting ${record.loopDevice} on ${target}`);
    mountFilesystem(record);
    record.stage = 'mounted';
    saveRecord(record);
    return record;
  } catch (e) {
    try {
      await teardown(record, 'discard', {});
    } catch (cleanup) {
      throw new HostError(`${(e as Error).message}; cleaning up also failed: ${(cleanup as Error).message} (run vhdmount --unmount ${target} to retry)`);
    }
    throw e;
  }
}

/** Finds a mount by its mount point or its VHD and takes it down; commit or discard apply to undo mode. */
export async function unmountVhd(mountPointOrFile: string, action: UnmountAction | undefined, options: LongOperationOptions = {}): Promise<MountRecord> {
  requireRoot();
  const wanted = path.resolve(mountPointOrFile);
  const real = fs.existsSync(wanted) ? fs.realpathSync(wanted) : wanted;
  const record = allRecords().find((r) => r.mountPoint === real || r.file === real || r.mountPoint === wanted);
  if (!record) throw new HostError(`nothing is mounted by vhdmount at ${wanted} (vhdmount --list shows what is)`);
  if (record.mode === 'undo' && !action) {
    throw new HostError(`${record.mountPoint} has an undo disk: say --commit to merge its changes into ${record.file}, or --discard to drop them`);
  }
  if (record.mode !== 'undo' && action) {
    throw new HostError(`${record.mountPoint} was mounted ${record.mode === 'direct' ? '--direct (writes went straight into the VHD)' : '--read-only'}; there is nothing to ${action}`);
  }
  await teardown(record, action ?? 'discard', options);
  return record;
}

export interface MountStatus extends MountRecord {
  /** "mounted", or what is wrong with a mount that was interrupted or taken down by hand. */
  status: string;
}

export function listMounts(): MountStatus[] {
  return allRecords().map((r) => {
    const mounted = r.loopDevice !== undefined && mountAt(r.mountPoint)?.source === r.loopDevice;
    let status: string;
    if (r.stage === 'mounted' && mounted) status = 'mounted';
    else if (r.stage === 'mounted') status = 'not mounted any more (unmounted by hand?); vhdmount --unmount finishes the clean-up';
    else status = `interrupted while ${r.stage}; vhdmount --unmount finishes the clean-up`;
    return { ...r, status };
  });
}

/** Undoes every step of a mount that is still in place, in reverse order; safe to run again after an interruption. */
async function teardown(record: MountRecord, action: UnmountAction, options: LongOperationOptions): Promise<void> {
  const mounted = mountAt(record.mountPoint);
  if (record.loopDevice && mounted?.source === record.loopDevice) {
    try {
      runTool('umount', [record.mountPoint]);
    } catch (e) {
      throw new HostError(`${record.mountPoint} could not be unmounted, so nothing was changed: ${(e as Error).message}. `
        + 'Leave the folder (and close files in it), then run vhdmount --unmount again');
    }
  }
  record.stage = 'unmounting';
  saveRecord(record);
  if (record.loopDevice && record.diskPath && loopBackingFile(record.loopDevice) === record.diskPath) detachLoop(record.loopDevice);
  if (record.fuseDir && mountAt(record.fuseDir)) runTool('fusermount3', ['-u', record.fuseDir]);
  if (record.nbdDevice) disconnectKernel(record.nbdDevice);
  // The helper processes are found by their command lines, which name this mount's socket:
  // a mount killed before it noted their pids still finds them. nbdfuse leaves by itself
  // once unmounted; one that never got as far is told to. The server flushes the disk and
  // releases its locks when told to stop.
  await stopProcesses(processesMentioning(record.socket).filter((pid) => commandLine(pid)[0]?.endsWith('nbdfuse')), HELPER_GRACE_MS);
  await stopProcesses(processesMentioning(record.socket), 0);
  if (record.undoFile && fs.existsSync(record.undoFile)) {
    if (action === 'commit') await mergeIntoParent(record.undoFile, options);
    else fs.rmSync(record.undoFile);
  }
  removeRecord(record);
}

async function startServer(record: MountRecord, served: string, signal?: AbortSignal): Promise<void> {
  const log = fs.openSync(path.join(recordDir(record), 'server.log'), 'a');
  const args = [VSCTL, 'vhd', 'serve', served, '--socket', record.socket, '--export', EXPORT_NAME, '--json', '--holder', `vhdmount (${record.mountPoint})`,
    // A server forked just before vhdmount is killed may start after --unmount looked for it; it then gives up.
    '--supervisor', String(process.pid)];
  if (record.mode === 'read-only') args.push('--read-only');
  // Nobody may write what is mounted: not the VHD under a read-only mount, nor the parents of whatever is served.
  args.push('--lock-chain');
  // Its own session: a Ctrl-C meant for vhdmount must not reach the server of a finished mount.
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'pipe', log] });
  fs.closeSync(log);
  record.serverPid = child.pid;
  saveRecord(record);
  const stdout = child.stdout!;
  let output = '';
  let exited = false;
  stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  child.on('exit', () => { exited = true; });
  try {
    await waitFor('the NBD server to start', () => output.includes('\n') || exited, START_TIMEOUT_MS, signal);
  } finally {
    stdout.destroy();
    child.unref();
  }
  if (!output.includes('\n')) {
    const said = fs.readFileSync(path.join(recordDir(record), 'server.log'), 'utf8').trim().split('\n').pop() ?? '';
    throw new HostError(`the NBD server did not start: ${said.replace(/^vsctl: /, '')}`);
  }
}

function uri(record: MountRecord): string {
  return `nbd+unix:///${EXPORT_NAME}?socket=${record.socket}`;
}

async function attachFuse(record: MountRecord, signal?: AbortSignal): Promise<void> {
  const dir = recordDir(record);
  record.fuseDir = path.join(dir, 'fuse');
  fs.mkdirSync(record.fuseDir, { recursive: true });
  saveRecord(record);
  const pidFile = path.join(dir, 'nbdfuse.pid');
  const log = fs.openSync(path.join(dir, 'nbdfuse.log'), 'a');
  const args = [...(record.mode === 'read-only' ? ['-r'] : []), '-P', pidFile, record.fuseDir, uri(record)];
  const child = spawn('nbdfuse', args, { detached: true, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  let exited = false;
  child.on('exit', () => { exited = true; });
  child.on('error', () => { exited = true; });
  child.unref();
  const ready = (): boolean => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() !== '';
  await waitFor('nbdfuse to start', () => ready() || exited, START_TIMEOUT_MS, signal);
  if (!ready()) {
    const said = fs.readFileSync(path.join(dir, 'nbdfuse.log'), 'utf8').trim();
    throw new HostError(`nbdfuse did not start${said ? `: ${said}` : ''}`);
  }
  record.fusePid = Number(fs.readFileSync(pidFile, 'utf8').trim());
  record.diskPath = path.join(record.fuseDir, 'nbd');
  saveRecord(record);
}

function attachKernel(record: MountRecord): void {
  const device = freeNbdDevice();
  record.nbdDevice = device;
  saveRecord(record);
  runTool('nbd-client', ['-unix', record.socket, device, '-name', EXPORT_NAME, ...(record.mode === 'read-only' ? ['-readonly'] : [])]);
  record.diskPath = device;
  saveRecord(record);
}

function disconnectKernel(device: string): void {
  if (fs.existsSync(`/sys/block/${path.basename(device)}/pid`)) runTool('nbd-client', ['-d', device]);
}

function choosePartition(diskPath: string, wanted: number | undefined): { partition: Partition | null; table: PartitionTable } {
  const fd = fs.openSync(diskPath, 'r');
  let table: PartitionTable;
  try {
    const size = fs.fstatSync(fd).size || Number(runTool('blockdev', ['--getsize64', diskPath]).trim());
    table = readPartitionTable((offset, length) => {
      const buf = Buffer.alloc(length);
      fs.readSync(fd, buf, 0, length, offset);
      return buf;
    }, size);
  } finally {
    fs.closeSync(fd);
  }
  if (table.scheme === 'none') {
    if (wanted !== undefined) throw new HostError(`the disk has no partition table, so it has no partition ${wanted}; omit --partition to mount the whole disk`);
    return { partition: null, table };
  }
  if (table.partitions.length === 0) throw new HostError(`the disk's ${table.scheme.toUpperCase()} partition table lists no partitions`);
  const partition = wanted === undefined ? table.partitions[0] : table.partitions.find((p) => p.number === wanted);
  if (!partition) {
    throw new HostError(`the disk has no partition ${wanted}; it has ${table.partitions.map((p) => `${p.number} (${p.size} bytes)`).join(', ')}`);
  }
  return { partition, table };
}

function mountFilesystem(record: MountRecord): void {
  const readOnly = record.mode === 'read-only';
  try {
    runTool('mount', [...(readOnly ? ['-o', 'ro'] : []), record.loopDevice!, record.mountPoint]);
  } catch (e) {
    const type = filesystemType(record.loopDevice!);
    const what = record.partition === null ? 'the disk' : `partition ${record.partition}`;
    throw new HostError(type
      ? `${what} holds a ${type} filesystem that this host could not mount: ${(e as Error).message}`
      : `${what} holds no filesystem this host recognizes (${(e as Error).message})`);
  }
}

/** Waits up to `graceMs` for the processes to leave by themselves, then sends SIGTERM and waits for them. */
async function stopProcesses(pids: number[], graceMs: number): Promise<void> {
  const running = (): number[] => pids.filter(isAlive);
  const names = pids.map((pid) => `${commandLine(pid)[0] ?? 'process'} (pid ${pid})`).join(', ');
  if (graceMs > 0) {
    try {
      await waitFor('helper processes to exit', () => running().length === 0, graceMs);
    } catch {
      // still running: they are told to stop below
    }
  }
  for (const pid of running()) process.kill(pid, 'SIGTERM');
  await waitFor(`${names} to exit`, () => running().length === 0, STOP_TIMEOUT_MS);
}

function existingFolder(p: string): string {
  let real: string;
  try {
    real = fs.realpathSync(p);
  } catch {
    throw new HostError(`mount point ${path.resolve(p)} does not exist; create the folder first`);
  }
  if (!fs.statSync(real).isDirectory()) throw new HostError(`mount point ${real} is not a folder`);
  return real;
}

function requireRoot(): void {
  if (process.geteuid?.() !== 0) throw new HostError('vhdmount needs root: attaching loop devices and mounting filesystems are root-only (run it with sudo)');
}
