// What killed processes leave behind is cleaned by vserverd, and said in its event log: drafts
// (".NAME.PID.partial", and write locks in the making, "NAME.lock.PID.tmp") under the storage
// roots whose writer is gone, run folders of VMs that are not registered, stale sockets of
// registered VMs whose worker is gone; a deleted VM's run folder.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isAlive } from '../host/process.js';
import { VmPaths } from '../vmm/paths.js';
import type { VmStatus } from '../vmm/state.js';
import { TestServer } from './helpers/server.js';
import { delay } from './helpers/wait.js';

interface Ref { $ref: string }
interface LoggedEvent { id: number; category: string; message: string; object: string | null }

const servers: TestServer[] = [];
const others: ChildProcess[] = [];

/** A process that listens on a Unix socket and is then killed -9: the socket file stays, as a dead worker's does. Returns its pid. */
async function leaveSocket(file: string): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'require("net").createServer().listen(process.argv[1], () => console.log("up"))', file], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the socket holder exited (${code})`)));
  });
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  assert.ok(fs.statSync(file).isSocket(), `${file} is left`);
  return child.pid!;
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await new Promise((r) => child.once('exit', r));
  assert.ok(!isAlive(child.pid!));
  return child.pid!;
}

function writeStatus(runDir: string, id: string, status: Partial<VmStatus>): VmPaths {
  const paths = VmPaths.of(id, runDir);
  fs.mkdirSync(paths.qemuDir, { recursive: true });
  paths.writeStatus({ id, name: 'x', state: 'TurnedOff', since: new Date().toISOString(), ...status });
  return paths;
}

async function events(server: TestServer): Promise<LoggedEvent[]> {
  return server.call<LoggedEvent[]>('VirtualServer.GetEvents', { limit: 1000 });
}

describe('leftovers of killed processes are cleaned and logged', { timeout: 120_000 }, () => {
  after(async () => {
    for (const child of others) child.kill('SIGKILL');
    for (const server of servers) {
      await server.stop('SIGKILL');
      server.remove();
    }
  });

  it('at start: dead drafts under the storage roots go (live ones and other files stay); run folders of unknown VMs go; stale sockets of known VMs go, their status stays', async () => {
    let server = await TestServer.start();
    servers.push(server);
    const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'keeper' });
    const keeperId = made.$ref.slice('VirtualMachine/'.length);
    await server.stop();

    const folder = path.join(server.dataDir, 'disks', 'deep');
    fs.mkdirSync(folder, { recursive: true });
    const dead = path.join(folder, `.new.vhd.${await deadPid()}.partial`);
    const live = path.join(folder, `.other.vhd.${process.pid}.partial`);
    const notADraft = path.join(folder, 'notes.partial');
    // A write lock is written as "<disk>.lock.PID.tmp" and linked into place (storage/vhd/lock.ts); a kill between leaves it.
    const deadLockDraft = path.join(folder, `disk.vhd.lock.${await deadPid()}.tmp`);
    const liveLockDraft = path.join(folder, `other.vhd.lock.${process.pid}.tmp`);
    for (const file of [dead, live, notADraft, deadLockDraft, liveLockDraft]) fs.writeFileSync(file, 'x');

    const ghost = writeStatus(server.runDir, '00000000-0000-4000-8000-000000000000', { workerPid: await deadPid() });
    await leaveSocket(ghost.control);
    // Not registered, off, but its worker runs (a `vsctl vm run` sharing the run root, before its turn on): it is left alone.
    const other = writeStatus(server.runDir, '11111111-1111-4111-8111-111111111111', {});
    const otherWorker = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 120000)', other.dir], { stdio: 'ignore' });
    others.push(otherWorker);
    other.writeStatus({ ...other.readStatus()!, workerPid: otherWorker.pid });
    const keeper = writeStatus(server.runDir, keeperId, {});
    const keeperWorker = await leaveSocket(keeper.control);
    keeper.writeStatus({ ...keeper.readStatus()!, workerPid: keeperWorker });
    await leaveSocket(keeper.migrationOut);

    server = await TestServer.start({ dataDir: server.dataDir, runDir: server.runDir });
    servers.push(server);
    assert.ok(!fs.existsSync(dead), 'the dead draft is removed');
    assert.ok(fs.existsSync(live), 'a draft whose writer runs stays');
    assert.ok(fs.existsSync(notADraft), 'a file not named as a draft stays');
    assert.ok(!fs.existsSync(deadLockDraft), 'a dead writer\'s unfinished write lock is removed');
    assert.ok(fs.existsSync(liveLockDraft), 'an unfinished write lock whose writer runs stays');
    assert.ok(!fs.existsSync(ghost.dir), 'the run folder of an unregistered VM is removed');
    assert.ok(fs.existsSync(other.status) && isAlive(otherWorker.pid!), 'a folder whose worker runs stays, and so does the worker');
    assert.ok(!fs.existsSync(keeper.control) && !fs.existsSync(keeper.migrationOut), 'the stale sockets of a registered VM are removed');
    assert.equal(keeper.readStatus()?.id, keeperId, 'its status stays (LastCrash reads it)');

    const messages = (await events(server)).map((e) => e.message);
    assert.ok(messages.some((m) => m.includes(dead) && /writer \(pid \d+\) is gone/.test(m)), `the draft's removal is logged:\n${messages.join('\n')}`);
    assert.ok(!messages.some((m) => m.includes(live)));
    assert.ok(messages.some((m) => m.includes(deadLockDraft) && /writer \(pid \d+\) is gone/.test(m)), `the lock draft's removal is logged:\n${messages.join('\n')}`);
    assert.ok(!messages.some((m) => m.includes(liveLockDraft)));
    assert.ok(messages.some((m) => m.includes(`removed the run folder ${ghost.dir}`)), `the run folder's removal is logged:\n${messages.join('\n')}`);
    assert.ok(messages.some((m) => m.startsWith('removed 2 stale sockets of keeper') && m.includes(keeper.control)), `the sockets' removal is logged:\n${messages.join('\n')}`);
  });

  it('DeleteVirtualMachine removes the VM\'s run folder (stale sockets and all) and its dead saved-state drafts, and logs it', async () => {
    const server = servers.at(-1)!;
    const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'doomed' });
    const id = made.$ref.slice('VirtualMachine/'.length);
    const paths = writeStatus(server.runDir, id, { workerPid: await deadPid() });
    await leaveSocket(paths.control);
    const vsv = await server.call<string>('VirtualMachine.get_SavedStateFilePath', { this: made.$ref });
    const draft = path.join(path.dirname(vsv), `.${path.basename(vsv)}.${await deadPid()}.partial`);
    fs.writeFileSync(draft, 'half a saved state');

    await server.call('VirtualServer.DeleteVirtualMachine', { vm: made.$ref });
    const deadline = Date.now() + 10_000;
    while (fs.existsSync(paths.dir)) {
      assert.ok(Date.now() < deadline, `${paths.dir} is still there 10 s after the delete`);
      await delay(50);
    }
    assert.ok(!fs.existsSync(draft), 'the dead saved-state draft is removed');
    const messages = (await events(server)).filter((e) => e.object === made.$ref).map((e) => e.message);
    assert.ok(messages.some((m) => m === `removed the run folder ${paths.dir} of doomed, which is no longer registered`), `logged:\n${messages.join('\n')}`);
    assert.ok(messages.some((m) => m.startsWith(`removed ${draft}`)), `logged:\n${messages.join('\n')}`);
  });
});
