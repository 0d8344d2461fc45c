// The vsctl disk and task groups, through vserverd: disk create and inspect, task list and wait.

import { followTask, isRef, taskRef, waitForTask } from './api-client.js';
import { clientFor, CONNECTION_OPTIONS, oneLine, printResult } from './api-call.js';
import { idOf, parseCount, print, printTable, refOf } from './api-output.js';
import { DEFAULT_DISK_SIZE, type DiskInfo } from '../../storage/vhd/index.js';
import type { Command } from './command.js';
import { createVerb, diskCommand, inGiB, infoVerb, MiB } from './disk-verbs.js';
import { formatSize, printRows } from './terminal.js';
import { showInfo } from './vhd.js';

// ---------------------------------------------------------------------------------------------
// disk

/** get_Info's answer as `vhd info` prints it when it is the VHD engine's description, else as "key: value" rows. */
function printInfo(info: unknown): void {
  const d = info as Partial<DiskInfo> | null;
  if (d && typeof d === 'object' && d.geometry && d.creator && Array.isArray(d.chain) && Array.isArray(d.warnings)) {
    showInfo(d as DiskInfo);
  } else if (typeof info === 'object' && info !== null && !Array.isArray(info)) {
    printRows(Object.entries(info).map(([key, value]): [string, string] => [key, typeof value === 'number' && /size/i.test(key) ? formatSize(value) : oneLine(value)]));
  } else {
    printResult(info);
  }
}

export const diskCommands: Command[] = [
  diskCommand(createVerb, 'disk', {
    summary: `Create a VHD through vserverd: dynamic (the default, ${inGiB(DEFAULT_DISK_SIZE)}), fixed (written in full), or differencing over --parent.`,
    details: 'FILE is taken from vserverd\'s first storage root when relative, and must lie in a storage root. Sizes are MB (or 2G, 1T). vsctl waits for the task, with a progress bar on a terminal.',
    extraOptions: CONNECTION_OPTIONS,
  }, async (request, args) => {
    const { file, type } = request;
    const sizeMB = request.type === 'differencing' || request.sizeBytes === undefined ? undefined : request.sizeBytes / MiB;
    const [method, params] = request.type === 'differencing'
      ? ['CreateDifferencingVirtualHardDisk', { path: file, parentPath: request.parent }]
      : [request.type === 'fixed' ? 'CreateFixedVirtualHardDisk' : 'CreateDynamicVirtualHardDisk', { path: file, ...(sizeMB === undefined ? {} : { sizeMB }) }];
    const client = clientFor(args.values);
    const task = refOf(await client.call(`VirtualServer.${method}`, params), method);
    const result = await followTask(client, task, { progress: !args.json });
    const created = isRef(result) && result.$ref.startsWith('HardDisk/') ? result.$ref.slice('HardDisk/'.length) : file;
    print(args, { file: created, type, ...(sizeMB === undefined ? {} : { sizeMB }), task, result }, () => console.log(`created ${type} disk ${created}`));
    return 0;
  }),
  diskCommand(infoVerb, 'disk', {
    summary: 'Describe a VHD as vserverd\'s VHD engine sees it: type, sizes, geometry, unique id, blocks, parent chain.',
    extraOptions: CONNECTION_OPTIONS,
  }, async ({ file }, args) => {
    const client = clientFor(args.values);
    const disk = refOf(await client.call('VirtualServer.GetHardDisk', { path: file }), 'GetHardDisk');
    const info = await client.call('HardDisk.get_Info', { this: disk });
    print(args, info, () => printInfo(info));
    return 0;
  }),
];

// ---------------------------------------------------------------------------------------------
// task

export const taskCommands: Command[] = [
  {
    name: 'list',
    usage: 'list',
    summary: 'List the tasks in flight and recently finished, newest first: id, status, percent done, description.',
    positionals: { min: 0, max: 0 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const refs = (await client.call<unknown[]>('VirtualServer.get_Tasks')).map((t) => refOf(t, 'get_Tasks'));
      const members = ['get_Description', 'get_PercentCompleted', 'get_IsComplete', 'get_Error'];
      const results = await client.batchAll(refs.flatMap((ref) => members.map((m): [string, Record<string, unknown>] => [`Task.${m}`, { this: ref }])));
      const tasks = refs.map((ref, i) => {
        const [description, percentCompleted, isComplete, error] = results.slice(i * 4, i * 4 + 4);
        return { id: idOf(ref), ref, description, percentCompleted, isComplete, error: error ?? null };
      });
      print(args, tasks, () => {
        if (tasks.length === 0) console.log('no tasks');
        const status = (t: (typeof tasks)[number]): string => (t.error ? `failed: ${(t.error as { name?: string }).name ?? ''}` : t.isComplete ? 'done' : 'running');
        if (tasks.length) printTable(['ID', 'STATUS', 'DONE', 'DESCRIPTION'], tasks.map((t) => [t.id, status(t), `${String(t.percentCompleted)}%`, String(t.description)]));
      });
      return 0;
    },
  },
  {
    name: 'wait',
    usage: 'wait TASK_ID_OR_REF [--timeout SECONDS]',
    summary: 'Wait for a task to finish (a progress bar on a terminal) and print its result. Exit status 1 if it failed or is still running at --timeout.',
    positionals: { min: 1, max: 1 },
    options: {
      timeout: { type: 'string', valueName: 'SECONDS', description: 'stop waiting after this long (default: as long as it takes)' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const timeoutMs = args.values.timeout === undefined ? undefined : parseCount(args.values.timeout, '--timeout') * 1000;
      const client = clientFor(args.values);
      const task = taskRef(args.positionals[0]);
      const outcome = await waitForTask(client, task, { progress: !args.json, timeoutMs });
      const ok = outcome.isComplete && !outcome.error;
      print(args, outcome, () => {
        if (outcome.error) console.error(`vsctl: ${task} failed: ${outcome.error.message} [${outcome.error.name}]`);
        else if (!outcome.isComplete) console.error(`vsctl: ${task} is still running (${outcome.percentCompleted}% done)`);
        else printResult(outcome.result);
      });
      return ok ? 0 : 1;
    },
  },
];
