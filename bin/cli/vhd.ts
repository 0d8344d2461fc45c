// "vsctl vhd ...": the VHD engine from the command line.

import {
  type CheckReport, type DiskInfo, IMAGE_TYPES, type ImageType, checkDisk, compactDisk, convertDisk, createDifferencing,
  createDynamic, createFixed, DEFAULT_DISK_SIZE, expandDisk, inspectDisk, MAX_DISK_SIZE, mergeIntoParent, mergeToNewDisk, VhdDisk,
} from '../../storage/vhd/index.js';
import { serveFile } from '../../storage/nbd/index.js';
import type { Command, ParsedArgs } from './command.js';
import { createVerb, diskCommand, inGiB, infoVerb } from './disk-verbs.js';
import { UsageError, formatBytes, formatSize, parseSize, printRows, progressBar } from './terminal.js';

function print(args: ParsedArgs, json: unknown, text: () => void): void {
  if (args.json) console.log(JSON.stringify(json, null, 2));
  else text();
}

async function withProgress<T>(label: string, args: ParsedArgs, work: (onProgress: (d: number, t: number) => void) => Promise<T>): Promise<T> {
  const bar = progressBar(label, !args.json);
  try {
    return await work((done, total) => bar.update(done, total));
  } finally {
    bar.end();
  }
}

/** A disk's description as `vhd info` prints it (and `disk inspect`, from vserverd's HardDisk.get_Info). */
export function showInfo(info: DiskInfo): void {
  const g = info.geometry;
  const rows: Array<[string, string]> = [
    ['File', info.file],
    ['Type', info.type],
    ['Size in guest', formatSize(info.sizeInGuest)],
    ['Original size', formatSize(info.originalSize)],
    ['Current size', formatSize(info.currentSize)],
    ['Geometry', `${g.cylinders}/${g.heads}/${g.sectorsPerTrack} (C/H/S), addresses ${formatSize(info.addressableSize)}`],
    ['Size taken from', info.sizeRule === 'chs' ? 'CHS geometry' : 'current size'],
    ['Size on host', `${formatSize(info.sizeOnHost)} (file ${formatSize(info.fileSize)})`],
  ];
  if (info.blocks) rows.push(['Blocks', `${info.blocks.allocated} of ${info.blocks.total} allocated, ${formatBytes(info.blockSize!)} each`]);
  rows.push(
    ['Creator', `"${info.creator.application}" ${info.creator.version} on ${info.creator.hostOs}`],
    ['Unique id', info.uniqueId],
    ['Created', info.created],
    ['Modified', info.modified],
  );
  if (info.savedState) rows.push(['Saved state', 'yes (a machine was saved while using this disk)']);
  if (info.parent) rows.push(['Parent', `${info.parent.file} (unique id ${info.parent.uniqueId})`]);
  if (info.chain.length > 1) rows.push(['Chain', info.chain.map((c) => `${c.file} [${c.type}]`).join(' -> ')]);
  for (const w of info.warnings) rows.push(['Warning', w]);
  printRows(rows);
}

function showCheck(report: CheckReport): void {
  for (const e of report.errors) console.log(`error: ${e.message}`);
  for (const w of report.warnings) console.log(`warning: ${w.message}`);
  console.log(report.valid
    ? `${report.file}: valid${report.checked.length > 1 ? ` (chain of ${report.checked.length} disks checked)` : ''}`
    : `${report.file}: NOT valid (${report.errors.length} error${report.errors.length === 1 ? '' : 's'})`);
}

function imageType(value: unknown, allowed: readonly ImageType[]): ImageType {
  const type = (value ?? 'dynamic') as ImageType;
  if (!allowed.includes(type)) throw new UsageError(`--type must be one of ${allowed.join(', ')}, not "${String(value)}"`);
  return type;
}

export const vhdCommands: Command[] = [
  diskCommand(createVerb, 'vhd', {
    summary: `Create a virtual hard disk: dynamic (the default, ${inGiB(DEFAULT_DISK_SIZE)}), fixed (all space written now), or a differencing child of PARENT.`,
    details: `Sizes are rounded up to the next size CHS geometry expresses exactly, so every VHD reader sees the same disk. Maximum ${inGiB(MAX_DISK_SIZE)}.`,
  }, async (request, args) => {
    const { file } = request;
    if (request.type === 'differencing') await createDifferencing(file, request.parent);
    else if (request.type === 'fixed') await withProgress('creating', args, (onProgress) => createFixed(file, request.sizeBytes, { onProgress }));
    else await createDynamic(file, { size: request.sizeBytes });
    const info = inspectDisk(file);
    print(args, info, () => console.log(`created ${info.type} disk ${info.file}, ${formatSize(info.sizeInGuest)} in the guest`));
    return 0;
  }),
  diskCommand(infoVerb, 'vhd', {
    summary: 'Inspect a disk: type, size in the guest and on the host, geometry, parent chain, creator, unique id, timestamps, allocated blocks.',
  }, async ({ file }, args) => {
    const info = inspectDisk(file);
    print(args, info, () => showInfo(info));
    return 0;
  }),
  {
    name: 'check',
    usage: 'check FILE',
    summary: 'Verify every structure of the disk and its parents. Exit status 0: valid; 1: not valid.',
    positionals: { min: 1, max: 1 },
    options: {},
    async run(args) {
      const report = await withProgress('checking', args, (onProgress) => checkDisk(args.positionals[0], { onProgress }));
      print(args, report, () => showCheck(report));
      return report.valid ? 0 : 1;
    },
  },
  {
    name: 'convert',
    usage: 'convert SRC DST [--type dynamic|fixed|raw]',
    summary: 'Copy SRC (a VHD of any type, or a raw image) into a new DST of the given type. A differencing chain is flattened.',
    positionals: { min: 2, max: 2 },
    options: { type: { type: 'string', valueName: 'dynamic|fixed|raw', description: 'type of DST (default dynamic)' } },
    async run(args) {
      const [source, target] = args.positionals;
      const type = imageType(args.values.type, IMAGE_TYPES);
      await withProgress('converting', args, (onProgress) => convertDisk(source, target, { type, onProgress }));
      print(args, { source, target, type }, () => console.log(`converted ${source} to ${type} ${target}`));
      return 0;
    },
  },
  {
    name: 'compact',
    usage: 'compact FILE',
    summary: 'Drop the all-zero blocks of a dynamic disk and shrink the file, in place. Safe to interrupt; run again to finish.',
    positionals: { min: 1, max: 1 },
    options: {},
    async run(args) {
      const result = await withProgress('compacting', args, (onProgress) => compactDisk(args.positionals[0], { onProgress }));
      print(args, result, () => console.log(
        `dropped ${result.blocksDropped} empty blocks, moved ${result.blocksMoved}; file ${formatBytes(result.bytesBefore)} -> ${formatBytes(result.bytesAfter)}`));
      return 0;
    },
  },
  {
    name: 'merge',
    usage: 'merge FILE [--to NEWFILE] [--type dynamic|fixed]',
    summary: 'Merge a differencing disk into its parent (FILE is then deleted), or with --to, its whole chain into a new standalone disk.',
    details: 'An interrupted merge leaves FILE in place; running the same command again completes it.',
    positionals: { min: 1, max: 1 },
    options: {
      to: { type: 'string', valueName: 'NEWFILE', description: 'write the flattened chain to NEWFILE instead' },
      type: { type: 'string', valueName: 'dynamic|fixed', description: 'type of NEWFILE (default dynamic)' },
    },
    async run(args) {
      const [file] = args.positionals;
      if (args.values.to) {
        const target = String(args.values.to);
        const type = imageType(args.values.type, ['dynamic', 'fixed']);
        await withProgress('merging', args, (onProgress) => mergeToNewDisk(file, target, { type, onProgress }));
        print(args, { file, target, type }, () => console.log(`merged the chain of ${file} into ${type} ${target}`));
      } else {
        if (args.values.type) throw new UsageError('--type goes with --to');
        const result = await withProgress('merging', args, (onProgress) => mergeIntoParent(file, { onProgress }));
        print(args, { file, ...result }, () => console.log(`merged ${formatBytes(result.bytesMerged)} of ${file} into ${result.parent}; ${file} removed`));
      }
      return 0;
    },
  },
  {
    name: 'map',
    usage: 'map FILE',
    summary: 'Show which ranges of the disk hold data (in this file or a parent) and which read as zeros, like qemu-img map.',
    positionals: { min: 1, max: 1 },
    options: {},
    async run(args) {
      const disk = VhdDisk.open(args.positionals[0]);
      try {
        const runs = disk.allocationMap(0, disk.size);
        print(args, runs, () => {
          console.log(`${'offset'.padStart(16)} ${'length'.padStart(16)}  contents`);
          for (const r of runs) console.log(`${String(r.offset).padStart(16)} ${String(r.length).padStart(16)}  ${r.allocated ? 'data' : 'zero (unallocated)'}`);
        });
      } finally {
        disk.close();
      }
      return 0;
    },
  },
  {
    name: 'serve',
    usage: 'serve FILE (--socket PATH | --tcp PORT) [--read-only] [--export NAME] [--lock-chain] [--holder TEXT] [--supervisor PID]',
    summary: 'Serve the disk over NBD until interrupted (Ctrl-C, SIGTERM), then flush it and release it.',
    details: 'The unix socket is created with mode 0600; TCP listens on 127.0.0.1 only. With --json, one line of JSON is printed once the server is ready.',
    positionals: { min: 1, max: 1 },
    options: {
      socket: { type: 'string', valueName: 'PATH', description: 'listen on this unix socket (mode 0600)' },
      tcp: { type: 'string', valueName: 'PORT', description: 'listen on 127.0.0.1:PORT instead (0 picks a free port)' },
      'read-only': { type: 'boolean', description: 'refuse writes; the file is not locked for writing' },
      export: { type: 'string', valueName: 'NAME', description: "the export's name (default: the file's name; \"\" also reaches it)" },
      supervisor: { type: 'string', valueName: 'PID', description: 'give up at once unless process PID (which started this server) is still its parent' },
      holder: { type: 'string', valueName: 'TEXT', description: 'who holds the disk, as told to anyone refused it (default: vsctl vhd serve (pid N))' },
      'lock-chain': { type: 'boolean', description: 'hold the write locks of the whole chain (parents; with --read-only the file too)' },
    },
    async run(args) {
      const [file] = args.positionals;
      const socket = args.values.socket === undefined ? undefined : String(args.values.socket);
      const tcp = args.values.tcp === undefined ? undefined : String(args.values.tcp);
      if ((socket === undefined) === (tcp === undefined)) throw new UsageError('give exactly one of --socket PATH and --tcp PORT');
      const tcpPort = tcp === undefined ? undefined : Number(tcp);
      if (tcpPort !== undefined && !(Number.isInteger(tcpPort) && tcpPort >= 0 && tcpPort < 65536)) throw new UsageError(`--tcp must be a port number, not "${tcp}"`);
      // A supervisor killed while starting this server cannot take it down again, so it must not run.
      if (args.values.supervisor !== undefined && process.ppid !== Number(args.values.supervisor)) {
        console.error(`vsctl vhd serve: process ${String(args.values.supervisor)}, which started this server, is gone; not serving`);
        return 1;
      }
      // Listening for the stop signals before the ready line: a supervisor may send one the instant it reads it.
      const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
        for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, () => resolve(s));
      });
      const served = await serveFile(file, {
        socket, tcpPort, readOnly: args.values['read-only'] === true, lockChain: args.values['lock-chain'] === true,
        exportName: args.values.export === undefined ? undefined : String(args.values.export),
        holder: args.values.holder === undefined ? `vsctl vhd serve (pid ${process.pid})` : `${String(args.values.holder)} (pid ${process.pid})`,
        log: (line) => console.error(`vsctl vhd serve: ${line}`),
      });
      const ready = { file: served.file, export: served.exportName, uri: served.uri, socket: served.socket, port: served.port, readOnly: served.readOnly, pid: process.pid };
      if (args.json) console.log(JSON.stringify(ready));
      else console.log(`serving ${served.file}${served.readOnly ? ' read-only' : ''} at ${served.uri}\nCtrl-C stops the server; the disk is then flushed and released.`);
      const signal = await stopSignal;
      await served.stop();
      if (!args.json) console.error(`vsctl vhd serve: ${signal}: stopped; ${served.file} flushed and released`);
      return 0;
    },
  },
  {
    name: 'expand',
    usage: 'expand FILE --size N(M|G|T)',
    summary: 'Grow a fixed or dynamic disk to a larger size (the guest must then grow its partitions).',
    positionals: { min: 1, max: 1 },
    options: { size: { type: 'string', valueName: 'N(M|G|T)', description: 'the new size' } },
    async run(args) {
      if (!args.values.size) throw new UsageError('expand needs --size');
      const size = parseSize(String(args.values.size), '--size');
      const result = await withProgress('expanding', args, (onProgress) => expandDisk(args.positionals[0], size, { onProgress }));
      print(args, result, () => console.log(`${args.positionals[0]} is now ${formatSize(result.size)}`));
      return 0;
    },
  },
];
