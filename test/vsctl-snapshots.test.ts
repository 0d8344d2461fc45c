// "vsctl snapshot", "vsctl backup" and "vsctl vm undo" against a real vserverd, as a user runs
// them: on a turned-off VM (the running guest's side is api-snapshots and api-backup), with
// their refusals named (a clashing name, a revert without --yes).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TestServer } from './helpers/server.js';
import { finishTask, type Ref } from './helpers/api-guests.js';
import { qemuCompare, type RunResult, vsctl } from './helpers/vhd-fixtures.js';

let server: TestServer;
let root: string;

function ctl(...args: string[]): RunResult {
  return vsctl(args, { env: { ...process.env, VSERVER_URL: server.url, VSERVER_TOKEN: server.adminToken } });
}

function ok<T>(...args: string[]): T {
  const r = ctl(...args, '--json');
  assert.equal(r.status, 0, `vsctl ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** vsctl refuses: 1 for the server's refusal, 2 for a usage error, with `name` on stderr. */
function fails(name: string, ...args: string[]): void {
  const r = ctl(...args);
  assert.equal(r.status, name.startsWith('VM_E_') ? 1 : 2, `vsctl ${args.join(' ')} should fail: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, new RegExp(name), r.stderr);
}

before(async () => {
  server = await TestServer.start();
  root = fs.realpathSync(server.dataDir);
  const vm = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'cli' });
  await finishTask(server, await server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: 'cli/cli.vhd', sizeMB: 8 }));
  await server.call('VirtualMachine.AddSCSIController', { this: vm.$ref });
  await server.call('VirtualMachine.AddHardDiskConnection', { this: vm.$ref, path: 'cli/cli.vhd', busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
});

after(async () => {
  await server?.stop();
  server?.remove();
});

describe('vsctl snapshot, backup and vm undo', () => {
  test('vm undo shows and sets the undo disks and their action; vm stop takes --undo', () => {
    assert.deepEqual(ok<{ undoable: boolean; undoAction: string; undoDisks: string[] }>('vm', 'undo', 'cli'), { vm: ok<{ vm: string }>('vm', 'undo', 'cli').vm, undoable: false, undoAction: 'Discard', undoDisks: [] });
    const on = ok<{ undoable: boolean; undoAction: string }>('vm', 'undo', 'cli', 'on', '--action', 'Keep');
    assert.deepEqual([on.undoable, on.undoAction], [true, 'Keep']);
    assert.match(ctl('vm', 'undo', 'cli').stdout, /Undo disks:\s+on/);
    fails('VM_E_NO_UNDO_DISKS', 'vm', 'undo', 'cli', 'discard');
    fails('--action is one of', 'vm', 'undo', 'cli', '--action', 'Later');
    assert.equal(ok<{ undoable: boolean }>('vm', 'undo', 'cli', 'off').undoable, false);
    assert.match(ctl('vm', 'stop', '--help').stdout, /--undo ACTION/);
  });

  test('snapshot create, list, revert (only with --yes) and delete', () => {
    const made = ok<{ snapshot: string }>('snapshot', 'create', 'cli', 'first', '--description', 'the first');
    assert.match(made.snapshot, /^Snapshot\//);
    ok('snapshot', 'create', 'cli', 'second');
    fails('VM_E_SNAPSHOT_NAME_TAKEN', 'snapshot', 'create', 'cli', 'FIRST');
    const tree = ok<Array<{ name: string; depth: number; current: boolean }>>('snapshot', 'list', 'cli');
    assert.deepEqual(tree.map((e) => [e.name, e.depth, e.current]), [['first', 0, false], ['second', 1, true]]);
    assert.match(ctl('snapshot', 'list', 'cli').stdout, /^ {2}\* second/m);
    fails('VM_E_CONFIRM_REQUIRED', 'snapshot', 'revert', 'cli', 'first');
    assert.equal(ok<{ state: string }>('snapshot', 'revert', 'cli', 'first', '--yes').state, 'TurnedOff');
    assert.equal(ok<Array<{ current: boolean; name: string }>>('snapshot', 'list', 'cli').find((e) => e.current)?.name, 'first');
    fails('VM_E_SNAPSHOT_UNKNOWN', 'snapshot', 'delete', 'cli', 'third');
    ok('snapshot', 'delete', 'cli', 'second');
    ok('snapshot', 'delete', 'cli', 'first');
    assert.deepEqual(ok('snapshot', 'list', 'cli'), []);
    assert.match(ctl('snapshot', 'list', 'cli').stdout, /no snapshots/);
  });

  test('backup create, list and restore', () => {
    const { backups } = ok<{ backups: Array<{ folder: string; kind: string }> }>('backup', 'create', 'cli', '--path', 'cli-backups');
    assert.equal(backups[0].kind, 'full');
    fails('--path FOLDER is required', 'backup', 'create', 'cli');
    const listed = ok<Array<{ folder: string; vm: { name: string } }>>('backup', 'list', 'cli-backups');
    assert.deepEqual(listed.map((b) => [b.folder, b.vm.name]), [[backups[0].folder, 'cli']]);
    const { vm } = ok<{ vm: string }>('backup', 'restore', backups[0].folder, '--name', 'cli-restored');
    assert.match(vm, /^VirtualMachine\//);
    const shown = ok<{ hardDisks: Array<{ file: string }> }>('vm', 'show', 'cli-restored');
    assert.equal(qemuCompare(shown.hardDisks[0].file, 'vpc', path.join(root, 'cli', 'cli.vhd'), 'vpc').status, 0, 'the restored disk reads as the original');
    fails('VM_E_PATH_OUTSIDE_ROOTS', 'backup', 'create', 'cli', '--path', '/etc');
  });
});
