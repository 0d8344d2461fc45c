// vhdmount: mount a partition of a VHD on the host, and take it down again.
//   vhdmount FILE MOUNTPOINT [--partition N] [--read-only | --direct]
//   vhdmount --unmount MOUNTPOINT|FILE [--commit | --discard]
//   vhdmount --list
//   vhdmount --partitions FILE

import { parseArgs } from 'node:util';
import { PartitionTableError, readPartitionTable } from '../storage/mount/partitions.js';
import { HostError, type MountMode, listMounts, mountVhd, unmountVhd } from '../storage/mount/vhdmount.js';
import { VhdDisk, VhdError } from '../storage/vhd/index.js';
import { UsageError, formatBytes, progressBar } from './cli/terminal.js';

export const HELP = `usage:
  vhdmount FILE MOUNTPOINT [--partition N] [--read-only | --direct]
  vhdmount --unmount MOUNTPOINT|FILE [--commit | --discard]
  vhdmount --list
  vhdmount --partitions FILE

Mounts a partition of a virtual hard disk (the first one unless --partition says which; the
whole disk when it has no partition table) on the host folder MOUNTPOINT. Needs root.

modes:
  (default)      writes go to an undo disk beside FILE (NAME.vhdmount-undo.vhd); at unmount,
                 --commit merges them into FILE and --discard drops them
  --direct       writes go straight into FILE
  --read-only    nothing is written

options:
  --partition N  mount partition N (MBR: 1-4 primary, 5 and up logical; GPT: entry number)
  --unmount      unmount the folder (or the VHD) given; also finishes an interrupted mount or unmount
  --commit       with --unmount: merge the undo disk into FILE
  --discard      with --unmount: delete the undo disk; FILE is as it was
  --list         show what vhdmount has mounted, from which file, in which mode
  --partitions   show FILE's partition table
  --json         print the result as JSON
  -h, --help     show this help

A disk open for writing elsewhere (a running machine, another mount) is refused.`;

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        partition: { type: 'string' }, 'read-only': { type: 'boolean' }, direct: { type: 'boolean' },
        unmount: { type: 'boolean' }, commit: { type: 'boolean' }, discard: { type: 'boolean' },
        list: { type: 'boolean' }, partitions: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values: v, positionals } = parsed;
  const json = v.json === true;
  const out = (data: unknown, text: string): void => console.log(json ? JSON.stringify(data, null, 2) : text);
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const exclusive = [v.unmount, v.list, v.partitions].filter(Boolean).length;
  if (exclusive > 1) throw new UsageError('give one of --unmount, --list and --partitions');

  if (v.list) {
    if (positionals.length) throw new UsageError('--list takes no arguments');
    const mounts = listMounts();
    out(mounts, mounts.length === 0 ? 'nothing is mounted by vhdmount' : mounts.map((m) =>
      `${m.mountPoint}: ${m.file}${m.partition === null ? ' (whole disk)' : ` partition ${m.partition}`}, ${m.mode}${m.undoFile ? ` (undo disk ${m.undoFile})` : ''}, ${m.method}; ${m.status}`).join('\n'));
    return 0;
  }

  if (v.partitions) {
    if (positionals.length !== 1) throw new UsageError('usage: vhdmount --partitions FILE');
    const disk = VhdDisk.open(positionals[0]);
    try {
      const table = readPartitionTable((offset, length) => disk.read(offset, length), disk.size);
      out(table, table.scheme === 'none' ? `${positionals[0]}: no partition table (vhdmount mounts the whole disk)`
        : [`${positionals[0]}: ${table.scheme.toUpperCase()}`, ...table.partitions.map((p) =>
          `  ${String(p.number).padStart(2)}  offset ${String(p.offset).padStart(12)}  size ${formatBytes(p.size).padStart(10)}  type ${p.type}${p.name ? `  "${p.name}"` : ''}`)].join('\n'));
    } finally {
      disk.close();
    }
    return 0;
  }

  if (v.unmount) {
    if (positionals.length !== 1) throw new UsageError('usage: vhdmount --unmount MOUNTPOINT|FILE [--commit | --discard]');
    if (v.commit && v.discard) throw new UsageError('give --commit or --discard, not both');
    const bar = progressBar('merging', !json);
    try {
      const record = await unmountVhd(positionals[0], v.commit ? 'commit' : v.discard ? 'discard' : undefined, { onProgress: (d, t) => bar.update(d, t) });
      const what = record.mode !== 'undo' ? '' : v.commit ? `; changes merged into ${record.file}` : '; changes discarded';
      out({ unmounted: record.mountPoint, file: record.file, mode: record.mode, action: v.commit ? 'commit' : v.discard ? 'discard' : null },
        `unmounted ${record.mountPoint}${what}`);
    } finally {
      bar.end();
    }
    return 0;
  }

  if (v.commit || v.discard) throw new UsageError('--commit and --discard go with --unmount');
  if (positionals.length !== 2) throw new UsageError('usage: vhdmount FILE MOUNTPOINT [--partition N] [--read-only | --direct]  (vhdmount --help)');
  if (v['read-only'] && v.direct) throw new UsageError('give --read-only or --direct, not both');
  const mode: MountMode = v['read-only'] ? 'read-only' : v.direct ? 'direct' : 'undo';
  let partition: number | undefined;
  if (v.partition !== undefined) {
    partition = Number(v.partition);
    if (!Number.isInteger(partition) || partition < 1) throw new UsageError(`--partition must be a partition number (1, 2, ...), not "${v.partition}"`);
  }
  // A signal mid-mount stops at the next step and undoes what was done; nothing stays mounted.
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new HostError('interrupted; the mount was undone'));
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);
  const record = await mountVhd(positionals[0], positionals[1], {
    partition, mode, signal: abort.signal, onStep: (m) => { if (!json) console.error(`vhdmount: ${m}`); },
  });
  out(record, `mounted ${record.file}${record.partition === null ? '' : ` partition ${record.partition}`} on ${record.mountPoint} (${mode}${record.undoFile ? `, writes go to ${record.undoFile}` : ''})`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (error: unknown) => {
    if (error instanceof UsageError) {
      console.error(`vhdmount: ${error.message}`);
      process.exitCode = 2;
    } else if (error instanceof HostError || error instanceof VhdError || error instanceof PartitionTableError) {
      console.error(`vhdmount: ${error.message}`);
      process.exitCode = 1;
    } else {
      console.error(`vhdmount: ${(error as Error)?.stack ?? String(error)}`);
      process.exitCode = 1;
    }
  },
);
