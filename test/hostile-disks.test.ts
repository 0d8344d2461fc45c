// Hostile files where a disk is expected. A differencing disk's parent locator that names a
// FIFO, a character device or a folder must not hang `vsctl vhd info/check/serve` (open() of a
// FIFO blocks until a writer comes): each fails at once with VHD_E_NOT_A_FILE. Every command
// is spawned with a time limit, and one that is killed by it fails the test.
//
// In vserverd the same children are refused by GetHardDisk and HardDisk.get_Info, for a Viewer
// too; and a parent that is a really slow file (a FUSE file whose every read takes 30 s:
// nbdfuse over nbdkit's memory plugin with the delay filter) costs its caller VM_E_FILE_TIMEOUT
// after the 10 s limit, while /healthz and other calls keep answering within a second. A disk
// task reading a slow file (a Convert whose source's data reads take 30 s, its footer quick so
// that the call's inspection passes) leaves vserverd as responsive, and its cancel ends it.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isAlive } from '../host/process.js';
import { createDifferencing, createDynamic, createFixed } from '../storage/vhd/index.js';
import { CANCEL_GRACE_MS } from '../server/disk-jobs.js';
import { FILE_TIME_LIMIT_MS } from '../server/file-workers.js';
import { MiB, makeTempDir, removeDir, run, VSCTL } from './helpers/vhd-fixtures.js';
import { TestServer, login, refusal } from './helpers/server.js';

/** Far above what a refusal takes (under 1 s), far below "forever". */
const COMMAND_LIMIT_MS = 15_000;

const dir = makeTempDir('hostile');
after(() => removeDir(dir));

/** Makes `child.vhd` whose parent (by every locator and by name) is `parent.vhd`, then lets `replace` put something else there. */
async function childOf(name: string, replace: (parent: string) => void): Promise<string> {
  const folder = path.join(dir, name);
  fs.mkdirSync(folder);
  const parent = path.join(folder, 'parent.vhd');
  const child = path.join(folder, 'child.vhd');
  await createDynamic(parent, { size: 8 * MiB });
  await createDifferencing(child, parent);
  fs.rmSync(parent);
  replace(parent);
  return child;
}

function mkfifo(file: string): void {
  const r = run('mkfifo', [file]);
  assert.equal(r.status, 0, r.stderr);
}

/** `apiError`: what vserverd says, when not VHD_E_NOT_A_FILE. */
const HOSTILE_PARENTS: Array<{ what: string; make: (parent: string) => void; apiError?: string }> = [
  { what: 'a FIFO', make: mkfifo },
  // /dev/zero's own numbers (1, 5): a device made here, as a locator could name anywhere.
  { what: 'a character device', make: (p) => assert.equal(run('mknod', [p, 'c', '1', '5']).status, 0) },
  // For vserverd, before anything else, a link that leads outside its storage roots.
  { what: 'a symlink to /dev/zero', make: (p) => fs.symlinkSync('/dev/zero', p), apiError: 'VM_E_PATH_OUTSIDE_ROOTS' },
  { what: 'a folder', make: (p) => fs.mkdirSync(p) },
];

function vsctlBounded(args: string[]): ReturnType<typeof run> {
  const started = Date.now();
  const r = run(VSCTL, args, { timeout: COMMAND_LIMIT_MS, killSignal: 'SIGKILL' });
  assert.equal(r.signal, null, `vsctl ${args.join(' ')} did not answer within ${COMMAND_LIMIT_MS / 1000} s (hung on open?)`);
  assert.ok(Date.now() - started < COMMAND_LIMIT_MS);
  return r;
}

describe('the engine refuses a parent that is not a regular file, without blocking', () => {
  for (const { what, make } of HOSTILE_PARENTS) {
    test(`a parent that is ${what}: vhd info, check and serve fail fast with VHD_E_NOT_A_FILE`, async () => {
      const child = await childOf(what.replace(/\W+/g, '-'), make);
      const parent = path.join(path.dirname(child), 'parent.vhd');

      const info = vsctlBounded(['vhd', 'info', child, '--json']);
      assert.equal(info.status, 1, info.stdout + info.stderr);
      const error = (JSON.parse(info.stdout) as { error: { code: string; message: string; file: string } }).error;
      assert.equal(error.code, 'VHD_E_NOT_A_FILE');
      assert.equal(error.file, parent);
      assert.match(error.message, /a disk or image must be a regular file/);

      const check = vsctlBounded(['vhd', 'check', child, '--json']);
      assert.equal(check.status, 1, check.stdout + check.stderr);
      const report = JSON.parse(check.stdout) as { valid: boolean; errors: Array<{ code: string }> };
      assert.equal(report.valid, false);
      assert.deepEqual(report.errors.map((e) => e.code), ['VHD_E_NOT_A_FILE']);

      const serve = vsctlBounded(['vhd', 'serve', child, '--socket', path.join(path.dirname(child), 'nbd.sock'), '--read-only']);
      assert.equal(serve.status, 1, serve.stdout + serve.stderr);
      assert.match(serve.stderr, /VHD_E_NOT_A_FILE/);
      assert.ok(!fs.existsSync(path.join(path.dirname(child), 'nbd.sock')), 'serve listened although the disk was refused');
    });
  }

  test('a FIFO in place of a disk\'s write lock (disk.vhd.lock) is not read: vhd compact takes the lock over and finishes', async () => {
    const disk = path.join(dir, 'locked.vhd');
    await createDynamic(disk, { size: 8 * MiB });
    mkfifo(`${disk}.lock`);
    const r = vsctlBounded(['vhd', 'compact', disk]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.ok(!fs.existsSync(`${disk}.lock`), 'the FIFO (taken for a stale lock) is still there');
  });

  test('a FIFO named directly, as the disk or as convert\'s source, is refused the same way', () => {
    const fifo = path.join(dir, 'direct.vhd');
    mkfifo(fifo);
    for (const args of [['vhd', 'info', fifo, '--json'], ['vhd', 'convert', fifo, path.join(dir, 'out.vhd'), '--json']]) {
      const r = vsctlBounded(args);
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.equal((JSON.parse(r.stdout) as { error: { code: string } }).error.code, 'VHD_E_NOT_A_FILE', args.join(' '));
    }
    assert.ok(!fs.existsSync(path.join(dir, 'out.vhd')));
  });
});

/** What a call that must stay quick may take while a slow file is being read. */
const RESPONSIVE_MS = 1000;
/** Calls on slow files at once, each on a file of its own. */
const SLOW_CALLS = 2;
/** Each read of the slow file takes this long: far past the time limit. */
const SLOW_READ_SECONDS = 30;

async function timed<T>(what: string, work: () => Promise<T>): Promise<T> {
  const started = Date.now();
  const result = await work();
  const took = Date.now() - started;
  assert.ok(took < RESPONSIVE_MS, `${what} took ${took} ms while a slow disk was being read`);
  return result;
}

describe('vserverd refuses hostile parents and stays responsive', () => {
  const root = path.join(dir, 'root');
  let server: TestServer;
  let viewer: string;
  /** Each slow file: its own FUSE mount, so that each read of it is a request in flight of its own. */
  const mounts: Array<{ folder: string; nbdfuse: ChildProcess }> = [];
  /** Puts a read-only FUSE file at `file` (its folder becomes the mount), served by nbdkit with `nbdkitArgs`. */
  const mountSlowFile = async (file: string, nbdkitArgs: string[]): Promise<void> => {
    const nbdfuse = spawn('nbdfuse', ['-r', file, '--command', 'nbdkit', '-s', ...nbdkitArgs], { stdio: 'ignore', detached: true });
    mounts.push({ folder: path.dirname(file), nbdfuse });
    for (let i = 0; !fs.existsSync(file); i++) {
      assert.ok(i < 100 && nbdfuse.exitCode === null, 'nbdfuse did not mount the slow file');
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const unmountAll = (): void => {
    for (const { folder, nbdfuse } of mounts.splice(0)) {
      // Its process group: nbdfuse and the nbdkit it started.
      if (nbdfuse.exitCode === null) process.kill(-nbdfuse.pid!, 'SIGKILL');
      run('fusermount3', ['-uz', folder]);
    }
  };

  before(async () => {
    fs.mkdirSync(root);
    server = await TestServer.start({ args: ['--storage-root', root] });
    await server.call('VirtualServer.CreateUser', { name: 'viewer', password: 'viewer-password', role: 'Viewer' });
    viewer = await login(server.url, 'viewer', 'viewer-password');
  });
  after(async () => {
    // Unmounted first (the server's FUSE daemon killed): a worker still reading is then released.
    unmountAll();
    await server?.stop();
    server?.remove();
  });

  /**
   * A fixed disk at root/NAME/source.vhd. The API's inspection reads only its footer and a
   * conversion first its first sector, which are quick; every other read below the footer's
   * page (the data, once the draft of the copy is made) takes SLOW_READ_SECONDS.
   */
  const slowFixedDisk = async (name: string): Promise<string> => {
    const backing = path.join(dir, `${name}.vhd`);
    await createFixed(backing, 8 * MiB);
    const size = fs.statSync(backing).size;
    const quickFrom = Math.floor((size - 512) / 4096) * 4096;
    const source = path.join(root, name, 'source.vhd');
    fs.mkdirSync(path.dirname(source));
    await mountSlowFile(source, ['eval', `get_size=echo ${size}`,
      `pread=if [ "$4" -ge 4096 ] && [ "$4" -lt ${quickFrom} ]; then sleep ${SLOW_READ_SECONDS}; fi; exec dd if=${backing} iflag=skip_bytes,count_bytes skip=$4 count=$3 status=none`]);
    return source;
  };
  /** The pid of the one disk job vserverd runs, once it has started and made its draft in `folder`. */
  const theDiskJob = async (folder: string): Promise<number> => {
    let jobs: number[] = [];
    for (let i = 0; jobs.length === 0 || fs.readdirSync(folder).length === 0; i++) {
      assert.ok(i < 50, 'no disk job process with a draft within 5 s');
      await new Promise((r) => setTimeout(r, 100));
      jobs = server.children('disk-job.js');
    }
    assert.equal(jobs.length, 1, `disk jobs: ${jobs.join(', ')}`);
    return jobs[0];
  };

  for (const { what, make, apiError = 'VHD_E_NOT_A_FILE' } of HOSTILE_PARENTS) {
    test(`a parent that is ${what}: GetHardDisk and HardDisk.get_Info are ${apiError}, for a Viewer too`, async () => {
      const folder = `api-${what.replace(/\W+/g, '-')}`;
      fs.mkdirSync(path.join(root, folder));
      const parent = path.join(root, folder, 'parent.vhd');
      const child = path.join(root, folder, 'child.vhd');
      await createDynamic(parent, { size: 8 * MiB });
      await createDifferencing(child, parent);
      fs.rmSync(parent);
      make(parent);
      for (const token of [server.adminToken, viewer]) {
        const got = await refusal(server.call('VirtualServer.GetHardDisk', { path: child }, token));
        assert.equal(got.data.name, apiError, got.message);
        assert.ok(got.message.includes(parent), got.message);
        const info = await refusal(server.call('HardDisk.get_Info', { this: `HardDisk/${child}` }, token));
        assert.equal(info.data.name, apiError, info.message);
      }
      assert.equal(await timed('/healthz', async () => (await fetch(`${server.url}/healthz`)).status), 200);
    });
  }

  test('a FIFO in place of a disk\'s write lock: HardDisk.Compact answers at once and its task completes', async () => {
    const disk = path.join(root, 'locked.vhd');
    await createDynamic(disk, { size: 8 * MiB });
    mkfifo(`${disk}.lock`);
    const task = await timed('HardDisk.Compact', () => server.call<{ $ref: string }>('HardDisk.Compact', { this: `HardDisk/${disk}` }));
    assert.equal(await timed('/healthz', async () => (await fetch(`${server.url}/healthz`)).status), 200);
    await server.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 10_000 });
    assert.equal(await server.call('Task.get_Error', { this: task.$ref }), null);
    assert.equal(await server.call('Task.get_IsComplete', { this: task.$ref }), true);
  });

  test('FIFOs named directly: a disk is VHD_E_NOT_A_FILE, a .vmc, ISO or floppy image VM_E_INVALID_PATH, each at once', async () => {
    const pipe = (name: string): string => {
      const file = path.join(root, name);
      mkfifo(file);
      return file;
    };
    const vhd = pipe('pipe.vhd');
    const disk = await timed('GetHardDisk', () => refusal(server.call('VirtualServer.GetHardDisk', { path: vhd }, viewer)));
    assert.equal(disk.data.name, 'VHD_E_NOT_A_FILE', disk.message);
    const vmc = pipe('pipe.vmc');
    const registered = await timed('RegisterVirtualMachine', () => refusal(server.call('VirtualServer.RegisterVirtualMachine', { path: vmc })));
    assert.equal(registered.data.name, 'VM_E_INVALID_PATH', registered.message);
    assert.ok(registered.message.includes(vmc), registered.message);
    const vm = await server.call<{ $ref: string }>('VirtualServer.CreateVirtualMachine', { name: 'pipes' });
    const drive = await server.call<{ $ref: string }>('VirtualMachine.AddDVDROMDrive', { this: vm.$ref, busNumber: 1, deviceNumber: 0 });
    const iso = await timed('AttachImage', () => refusal(server.call('DVDROMDrive.AttachImage', { this: drive.$ref, path: pipe('pipe.iso') })));
    assert.equal(iso.data.name, 'VM_E_INVALID_PATH', iso.message);
    await server.call('VirtualMachine.AddFloppyDrive', { this: vm.$ref });
    const floppy = await timed('AttachFloppyImage', () => refusal(server.call('VirtualMachine.AttachFloppyImage', { this: vm.$ref, path: pipe('pipe.vfd') })));
    assert.equal(floppy.data.name, 'VM_E_INVALID_PATH', floppy.message);
  });

  test(`parents whose reads take ${SLOW_READ_SECONDS} s: VM_E_FILE_TIMEOUT after the limit, /healthz and other calls answered meanwhile, the workers reading killed`, async () => {
    // Each child's locators name slow-N/parent.vhd; then that name becomes a FUSE file.
    const normal = path.join(root, 'normal.vhd');
    await createDynamic(normal, { size: 8 * MiB });
    const children: string[] = [];
    for (let n = 0; n < SLOW_CALLS; n++) {
      const folder = path.join(root, `slow-${n}`);
      fs.mkdirSync(folder);
      const parent = path.join(folder, 'parent.vhd');
      const child = path.join(root, `slow-child-${n}.vhd`);
      await createDynamic(parent, { size: 8 * MiB });
      await createDifferencing(child, parent);
      fs.rmSync(parent);
      await mountSlowFile(parent, ['--filter=delay', 'memory', '8M', `rdelay=${SLOW_READ_SECONDS}`]);
      children.push(child);
    }

    // Several at once: each holds a worker, and other file work still gets one.
    const started = Date.now();
    let settled = 0;
    const slow = children.map((child, i) =>
      refusal(i % 2 ? server.call('HardDisk.get_Info', { this: `HardDisk/${child}` }) : server.call('VirtualServer.GetHardDisk', { path: child }, viewer))
        .finally(() => { settled++; }));
    const workers = (): string[] => run('pgrep', ['-P', String(server.process.pid), '-f', 'file-worker.js']).stdout.split('\n').filter(Boolean);
    let workersDuring: string[] = [];
    // The first answers come while the slow calls are certainly still pending.
    let checks = 0;
    while (settled < slow.length) {
      assert.equal(await timed('/healthz', async () => (await fetch(`${server.url}/healthz`)).status), 200);
      assert.equal(await timed('VirtualServer.get_Name', () => server.call('VirtualServer.get_Name', {}, viewer)), (await server.call('VirtualServer.get_Name')));
      assert.deepEqual(await timed('GetHardDisk of a normal disk', () => server.call('VirtualServer.GetHardDisk', { path: normal }, viewer)), { $ref: `HardDisk/${normal}` });
      checks++;
      if (checks === 1) workersDuring = workers();
      await new Promise((r) => setTimeout(r, 250));
    }
    const took = Date.now() - started;
    for (const got of await Promise.all(slow)) {
      assert.equal(got.data.name, 'VM_E_FILE_TIMEOUT', got.message);
      assert.match(got.message, new RegExp(`did not answer within ${FILE_TIME_LIMIT_MS / 1000} s`));
    }
    assert.ok(took >= FILE_TIME_LIMIT_MS - 100 && took < FILE_TIME_LIMIT_MS + 5000, `the slow calls ended after ${took} ms`);
    assert.ok(checks >= 10, `only ${checks} rounds of checks ran while the slow calls were pending`);
    // One worker for each slow call, and one more for the normal disk.
    assert.equal(workersDuring.length, SLOW_CALLS + 1, `vserverd's file workers during the slow calls: ${workersDuring.join(', ')}`);

    // The workers given up on were killed, not left behind: once the slow file systems are gone
    // (a read in flight in one may outlive SIGKILL until answered), only the normal disk's remains ...
    unmountAll();
    const running = (): string[] => workersDuring.filter((pid) => fs.existsSync(`/proc/${pid}`));
    for (let i = 0; running().length > 1; i++) {
      assert.ok(i < 50, `vserverd's file workers ${running().join(', ')} still run 5 s after the slow file systems went`);
      await new Promise((r) => setTimeout(r, 100));
    }
    // ... and file work goes on.
    assert.deepEqual(await server.call('HardDisk.get_Type', { this: `HardDisk/${normal}` }), 'Dynamic');
  });

  test(`a Convert whose source's reads take ${SLOW_READ_SECONDS} s: /healthz and other calls answered meanwhile, Task.Cancel ends it with VM_E_TASK_CANCELLED, no draft, its disk job gone`, async () => {
    const source = await slowFixedDisk('slow-source');
    const normal = path.join(root, 'convert-normal.vhd');
    await createDynamic(normal, { size: 8 * MiB });
    const targetFolder = path.join(root, 'converted');
    fs.mkdirSync(targetFolder);
    const target = path.join(targetFolder, 'copy.vhd');

    const task = await timed('HardDisk.Convert', () => server.call<{ $ref: string }>('HardDisk.Convert', { this: `HardDisk/${source}`, path: target, type: 'Fixed' }));
    const jobs = [await theDiskJob(targetFolder)];
    // Several seconds of a read in flight: everything else answers at once.
    const started = Date.now();
    while (Date.now() - started < 4000) {
      assert.equal(await timed('/healthz', async () => (await fetch(`${server.url}/healthz`)).status), 200);
      assert.equal(await timed('VirtualServer.get_Name', () => server.call('VirtualServer.get_Name', {}, viewer)), await server.call('VirtualServer.get_Name'));
      assert.deepEqual(await timed('GetHardDisk of a normal disk', () => server.call('VirtualServer.GetHardDisk', { path: normal }, viewer)), { $ref: `HardDisk/${normal}` });
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(await server.call('Task.get_IsComplete', { this: task.$ref }), false, 'the Convert finished although its source does not answer');
    assert.deepEqual(fs.readdirSync(targetFolder), [`.copy.vhd.${jobs[0]}.partial`], 'the disk job has its draft and waits for a read');

    const cancelled = Date.now();
    await timed('Task.Cancel', () => server.call('Task.Cancel', { this: task.$ref }));
    // The child cannot hear the request while it waits for its read: it is killed after the grace.
    const limit = CANCEL_GRACE_MS + 5000;
    assert.equal(await server.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: limit }), true, `the cancelled Convert did not end within ${limit} ms`);
    const took = Date.now() - cancelled;
    assert.ok(took >= CANCEL_GRACE_MS - 100 && took < limit, `the cancel took ${took} ms`);
    const error = await server.call<{ name: string; message: string }>('Task.get_Error', { this: task.$ref });
    assert.equal(error?.name, 'VM_E_TASK_CANCELLED', JSON.stringify(error));
    assert.deepEqual(fs.readdirSync(targetFolder), [], 'no draft nor copy is left');
    assert.ok(!isAlive(jobs[0]), `the disk job ${jobs[0]} still runs after the cancel`);
    assert.equal(await timed('/healthz', async () => (await fetch(`${server.url}/healthz`)).status), 200);
  });

  test('vserverd stopped (SIGTERM) while a disk job waits for a slow read: the job is killed, and the next start settles the task as VM_E_SERVICE_STOPPED and removes the draft', async () => {
    const source = await slowFixedDisk('slow-at-stop');
    const targetFolder = path.join(root, 'converted-at-stop');
    fs.mkdirSync(targetFolder);
    const task = await server.call<{ $ref: string }>('HardDisk.Convert', { this: `HardDisk/${source}`, path: path.join(targetFolder, 'copy.vhd'), type: 'Fixed' });
    const job = await theDiskJob(targetFolder);
    assert.equal(await server.stop('SIGTERM'), 0);
    // Stuck in its read, the job cannot notice that vserverd went: the stop itself kills it.
    for (let i = 0; isAlive(job); i++) {
      assert.ok(i < 20, `the disk job ${job} still runs 2 s after vserverd stopped`);
      await new Promise((r) => setTimeout(r, 100));
    }
    server = await TestServer.start({ dataDir: server.dataDir, runDir: server.runDir, args: ['--storage-root', root] });
    const error = await server.call<{ name: string } | null>('Task.get_Error', { this: task.$ref });
    assert.equal(error?.name, 'VM_E_SERVICE_STOPPED', JSON.stringify(error));
    assert.deepEqual(fs.readdirSync(targetFolder), [], 'the killed job\'s draft is removed at the start');
  });
});
