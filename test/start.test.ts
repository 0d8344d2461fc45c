// `npm start` as a user runs it (scripts/start.sh): vserverd replaces the start script, so the
// pid it prints is node's own and SIGTERM there stops it in order (a running guest whose action
// on quit is Save ends Saved); SIGTERM to npm itself (kill $! after npm start &) and Ctrl+C in the
// terminal (SIGINT to npm's whole process group) do too; and a start with nothing changed since
// the last build does not run the compiler.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isAlive, processesMentioning } from '../host/process.js';
import { testGuest } from './helpers/guest.js';
import { ADMIN_PASSWORD, TestServer, login, rpc } from './helpers/server.js';
import { PROJECT_ROOT } from './helpers/vhd-fixtures.js';

/** A start may have to compile everything (a minute or two under load); a stop may save a VM. */
const START_MS = 300_000;
const STOP_MS = 120_000;
const STAMP = path.join(PROJECT_ROOT, 'dist', '.start-build-stamp');

interface Started { npm: ChildProcess; pid: number; url: string; output: () => string; exited: Promise<number | null>; seconds: number }

const folders: string[] = [];
function tmp(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  folders.push(dir);
  return dir;
}

/** `npm start -- --port 0 --data DATA` in its own process group, as a terminal would run it; resolves when vserverd listens. */
async function npmStart(dataDir: string, runDir: string): Promise<Started> {
  const began = Date.now();
  const npm = spawn('npm', ['start', '--silent', '--', '--port', '0', '--data', dataDir], {
    cwd: PROJECT_ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, VSERVER_ADMIN_PASSWORD: ADMIN_PASSWORD, VSERVER_RUN_DIR: runDir },
  });
  let output = '';
  const exited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
  const { url, pid } = await new Promise<{ url: string; pid: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start did not listen within ${START_MS / 1000} s:\n${output}`)), START_MS);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const match = /listening on (http:\/\/\S+?)\/ \(pid (\d+);/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve({ url: match[1], pid: Number(match[2]) });
      }
    };
    npm.stdout!.on('data', onData);
    npm.stderr!.on('data', onData);
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`npm start exited (${code}) before listening:\n${output}`)); });
  });
  return { npm, pid, url, output: () => output, exited, seconds: (Date.now() - began) / 1000 };
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms / 1000} s`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

async function gone(pid: number, ms: number): Promise<void> {
  for (const end = Date.now() + ms; isAlive(pid); ) {
    if (Date.now() > end) throw new Error(`process ${pid} is still running after ${ms / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** What a restarted vserverd on the same folders says about them. */
async function afterRestart<T>(dataDir: string, runDir: string, read: (server: TestServer) => Promise<T>): Promise<T> {
  const server = await TestServer.start({ dataDir, runDir });
  try {
    return await read(server);
  } finally {
    await server.stop();
  }
}

describe('npm start', { timeout: 900_000 }, () => {
  const running: Started[] = [];

  before(() => {
    // npm start runs setup.sh, which reinstalls the packages when they are older than the lock
    // file: never under a test, whose runner and neighbours use them.
    const installed = path.join(PROJECT_ROOT, 'node_modules', '.package-lock.json');
    assert.ok(fs.existsSync(installed) && fs.statSync(installed).mtimeMs >= fs.statSync(path.join(PROJECT_ROOT, 'package-lock.json')).mtimeMs,
      'node_modules is older than package-lock.json: run scripts/setup.sh test first');
  });

  after(async () => {
    for (const started of running) {
      if (isAlive(started.pid)) process.kill(started.pid, 'SIGKILL');
    }
    for (const dir of folders) {
      for (const pid of processesMentioning(dir).filter(isAlive)) process.kill(pid, 'SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('prints node\'s own pid; SIGTERM to it applies the action on quit (a running guest ends Saved), and npm ends with it', async () => {
    const dataDir = tmp('vserver-data-');
    const runDir = tmp('vserver-run-');
    const started = await npmStart(dataDir, runDir);
    running.push(started);
    assert.notEqual(started.pid, started.npm.pid, 'the pid printed is not npm\'s');
    const command = fs.readFileSync(`/proc/${started.pid}/cmdline`, 'utf8').replace(/\0$/, '').split('\0');
    assert.equal(fs.realpathSync(`/proc/${started.pid}/exe`), fs.realpathSync(process.execPath), `pid ${started.pid} is node: ${command.join(' ')}`);
    assert.equal(command[1], 'dist/server/main.js', `pid ${started.pid} runs vserverd, not a shell: ${command.join(' ')}`);
    assert.deepEqual(command.slice(2), ['--port', '0', '--data', dataDir], 'npm start -- ARGS reaches vserverd');

    const token = await login(started.url, 'admin', ADMIN_PASSWORD);
    const call = <T>(method: string, params: Record<string, unknown> = {}): Promise<T> => rpc<T>(started.url, method, params, token);
    fs.mkdirSync(path.join(dataDir, 'disks'));
    fs.copyFileSync(testGuest().bootVhd, path.join(dataDir, 'disks', 'boot.vhd'));
    const vm = (await call<{ $ref: string }>('VirtualServer.CreateVirtualMachine', { name: 'quit-saves' })).$ref;
    await call('VirtualMachine.put_Memory', { this: vm, value: 128 });
    await call('VirtualMachine.AddSCSIController', { this: vm });
    await call('VirtualMachine.AddHardDiskConnection', { this: vm, path: 'disks/boot.vhd', busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
    await call('VirtualMachine.put_ShutdownActionOnQuit', { this: vm, value: 'Save' });
    const task = await call<{ $ref: string }>('VirtualMachine.Startup', { this: vm });
    assert.equal(await call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 120_000 }), true);
    assert.equal(await call('VirtualMachine.get_State', { this: vm }), 'Running');

    process.kill(started.pid, 'SIGTERM');
    assert.equal(await within(started.exited, STOP_MS, 'npm start after SIGTERM to vserverd'), 0, started.output());
    await gone(started.pid, 5_000);
    assert.match(started.output(), /vserverd: SIGTERM: applying each running VM's action on quit\n[^]*vserverd: quit-saves: Save done/);
    assert.equal(await afterRestart(dataDir, runDir, (server) => server.call('VirtualMachine.get_State', { this: vm })), 'Saved');
  });

  test('SIGTERM to npm\'s own pid reaches vserverd, which stops in order; npm ends with it', async () => {
    const dataDir = tmp('vserver-data-');
    const runDir = tmp('vserver-run-');
    const started = await npmStart(dataDir, runDir);
    running.push(started);
    const parent = fs.readFileSync(`/proc/${started.pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1];
    process.kill(started.npm.pid!, 'SIGTERM');
    await within(started.exited, STOP_MS, 'npm start after SIGTERM to npm');
    await gone(started.pid, 10_000);
    assert.match(started.output(), /vserverd: SIGTERM: applying each running VM's action on quit/);
    assert.equal(await started.exited, 0);
    assert.equal(parent, String(started.npm.pid), 'vserverd was npm\'s own child: no shell between to swallow the signal');
    const events = await afterRestart(dataDir, runDir, (server) => server.call<{ message: string }[]>('VirtualServer.GetEvents', { limit: 1000 }));
    assert.ok(events.some((e) => e.message === 'vserverd stopped (SIGTERM)'), JSON.stringify(events.map((e) => e.message)));
  });

  test('Ctrl+C (SIGINT to npm\'s process group) stops vserverd in order too: it logs its stop, and nothing is left running', async () => {
    const dataDir = tmp('vserver-data-');
    const runDir = tmp('vserver-run-');
    const started = await npmStart(dataDir, runDir);
    running.push(started);
    process.kill(-started.npm.pid!, 'SIGINT');
    await within(started.exited, STOP_MS, 'npm start after Ctrl+C');
    await gone(started.pid, STOP_MS);
    assert.match(started.output(), /vserverd: SIGINT: applying each running VM's action on quit/);
    const events = await afterRestart(dataDir, runDir, (server) => server.call<{ message: string }[]>('VirtualServer.GetEvents', { limit: 1000 }));
    assert.ok(events.some((e) => e.message === 'vserverd stopped (SIGINT)'), JSON.stringify(events.map((e) => e.message)));
  });

  test('compiles when a source is newer than the last build, and not on the next start with nothing changed', async () => {
    // The last build is made to look old: as if a source had been saved since.
    fs.closeSync(fs.openSync(STAMP, 'a'));
    fs.utimesSync(STAMP, new Date('2001-01-01'), new Date('2001-01-01'));
    const times: Record<string, number> = {};
    for (const round of ['after a change', 'nothing changed']) {
      const started = await npmStart(tmp('vserver-data-'), tmp('vserver-run-'));
      running.push(started);
      times[round] = started.seconds;
      const compiled = /start: compiling/.test(started.output());
      assert.equal(compiled, round === 'after a change', `${round}: compiled ${compiled}:\n${started.output()}`);
      process.kill(started.pid, 'SIGTERM');
      await within(started.exited, STOP_MS, 'npm start after SIGTERM');
    }
    assert.ok(fs.statSync(STAMP).mtimeMs > Date.parse('2001-01-02'), 'the build renewed the stamp');
    console.log(`seconds from npm start to listening: ${JSON.stringify(times)}`);
  });
});
