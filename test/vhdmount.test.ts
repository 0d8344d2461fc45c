// vhdmount end to end on this host: VHDs with real partition tables (sfdisk) and ext4
// filesystems (mkfs.ext4), mounted through our NBD server, nbdfuse, a loop device at the
// partition's offset and the kernel's ext4; files written, committed or discarded, read back.
// Needs root, /dev/fuse and loop devices; skipped with the reason otherwise.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CAMPAIGN_ROUNDS, killPoint } from './helpers/campaign.js';
import { MiB, PROJECT_ROOT, makeTempDir, mustRun, patternBytes, removeDir, run, sha256File, vsctl } from './helpers/vhd-fixtures.js';

const VHDMOUNT = path.join(PROJECT_ROOT, 'bin', 'vhdmount');

function unavailable(): string | false {
  if (process.geteuid?.() !== 0) return 'vhdmount needs root';
  if (!fs.existsSync('/dev/fuse')) return 'no /dev/fuse on this host';
  if (!fs.existsSync('/dev/loop-control')) return 'no loop devices on this host';
  return false;
}

let work: string;
let env: NodeJS.ProcessEnv;

function vhdmount(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return run(VHDMOUNT, args, { env });
}

function mustVhdmount(...args: string[]): string {
  const r = vhdmount(...args);
  assert.equal(r.status, 0, `vhdmount ${args.join(' ')} exited ${r.status}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

function assertValid(file: string): void {
  const r = vsctl(['vhd', 'check', file]);
  assert.equal(r.status, 0, `vsctl vhd check ${file}:\n${r.stdout}${r.stderr}`);
}

/** True when nothing of a mount on `mountPoint` of `file` is left: mount, loop device, undo disk, record. */
function assertNothingLeft(file: string, mountPoint: string, context = ''): void {
  const mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  assert.ok(!mountinfo.includes(` ${mountPoint} `), `${mountPoint} is still mounted${context}`);
  assert.ok(!mountinfo.includes(env.VHDMOUNT_STATE_DIR!), 'a FUSE mount under the state folder is left');
  assert.ok(!mustRun('losetup', ['--list', '--noheadings', '-O', 'BACK-FILE']).includes(env.VHDMOUNT_STATE_DIR!), 'a loop device is left attached');
  assert.ok(!fs.existsSync(file.replace(/\.vhd$/, '.vhdmount-undo.vhd')), 'the undo disk is left behind');
  assert.ok(!fs.existsSync(`${file}.lock`), `the VHD is still locked: ${fs.existsSync(`${file}.lock`) ? fs.readFileSync(`${file}.lock`, 'utf8') : ''}`);
  assert.deepEqual(JSON.parse(mustVhdmount('--list', '--json')), []);
  // A server forked just as vhdmount was killed may still be starting; it must give up within moments.
  const helpers = (): string[] => mustRun('ps', ['-eo', 'pid,args']).split('\n').filter((line) => line.includes(env.VHDMOUNT_STATE_DIR!));
  for (let i = 0; i < 50 && helpers().length; i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  assert.deepEqual(helpers(), [], 'a server or nbdfuse of the mount is still running');
}

const PARTITION_1 = { start: 2048, sectors: 49152 };
// The second ends short of the disk's end, where GPT keeps its backup table.
const PARTITION_2 = { start: 51200, sectors: 77824 };

/** A 64 MiB VHD with two ext4 partitions, built as a raw image with sfdisk and mkfs.ext4, then converted. */
function makePartitionedVhd(name: string, label: 'dos' | 'gpt'): string {
  const raw = path.join(work, `${name}.raw`);
  fs.writeFileSync(raw, '');
  fs.truncateSync(raw, 64 * MiB);
  const layout = label === 'dos'
    ? `label: dos\nstart=${PARTITION_1.start}, size=${PARTITION_1.sectors}, type=83\nstart=${PARTITION_2.start}, size=${PARTITION_2.sectors}, type=83\n`
    : `label: gpt\nstart=${PARTITION_1.start}, size=${PARTITION_1.sectors}, name=first\nstart=${PARTITION_2.start}, size=${PARTITION_2.sectors}, name=second\n`;
  const sfdisk = run('sfdisk', ['-q', raw], { input: layout });
  assert.equal(sfdisk.status, 0, sfdisk.stderr);
  for (const [i, p] of [PARTITION_1, PARTITION_2].entries()) {
    mustRun('mkfs.ext4', ['-q', '-F', '-L', `part${i + 1}`, '-E', `offset=${p.start * 512}`, raw, `${(p.sectors * 512) / 1024}k`]);
  }
  const vhd = path.join(work, `${name}.vhd`);
  assert.equal(vsctl(['vhd', 'convert', raw, vhd]).status, 0);
  fs.rmSync(raw);
  return vhd;
}

function folder(name: string): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

describe('vhdmount', { skip: unavailable() }, () => {
  before(() => {
    work = makeTempDir('vhdmount');
    env = { ...process.env, VHDMOUNT_STATE_DIR: path.join(work, 'state') };
  });
  after(() => {
    // Leave nothing mounted even when a test failed half-way.
    for (const m of JSON.parse(vhdmount('--list', '--json').stdout || '[]') as Array<{ mountPoint: string; mode: string }>) {
      vhdmount('--unmount', m.mountPoint, ...(m.mode === 'undo' ? ['--discard'] : []));
    }
    removeDir(work);
  });

  it('commits an undo disk into the VHD on both partitions, and the files are there after a remount', () => {
    const vhd = makePartitionedVhd('commit', 'dos');
    const table = JSON.parse(mustVhdmount('--partitions', vhd, '--json')) as { scheme: string; partitions: Array<{ number: number; offset: number; size: number }> };
    assert.equal(table.scheme, 'mbr');
    assert.deepEqual(table.partitions.map((p) => [p.number, p.offset, p.size]),
      [[1, PARTITION_1.start * 512, PARTITION_1.sectors * 512], [2, PARTITION_2.start * 512, PARTITION_2.sectors * 512]]);
    const mnt = folder('commit-mnt');
    const data = patternBytes(7, 3 * MiB + 123);
    for (const partition of ['1', '2']) {
      mustVhdmount(vhd, mnt, '--partition', partition);
      assert.match(mustRun('findmnt', ['-n', '-o', 'FSTYPE', mnt]), /ext4/);
      assert.equal(mustRun('e2label', [mustRun('findmnt', ['-n', '-o', 'SOURCE', mnt]).trim()]).trim(), `part${partition}`);
      fs.writeFileSync(path.join(mnt, 'hello.txt'), `partition ${partition}\n`);
      fs.writeFileSync(path.join(mnt, 'data.bin'), data);
      const undo = vhd.replace(/\.vhd$/, '.vhdmount-undo.vhd');
      assert.ok(fs.existsSync(undo), 'writes go to an undo disk');
      mustVhdmount('--unmount', mnt, '--commit');
      assertNothingLeft(vhd, mnt);
      assertValid(vhd);
    }
    for (const partition of ['1', '2']) {
      mustVhdmount(vhd, mnt, '--partition', partition, '--read-only');
      assert.equal(fs.readFileSync(path.join(mnt, 'hello.txt'), 'utf8'), `partition ${partition}\n`);
      assert.ok(fs.readFileSync(path.join(mnt, 'data.bin')).equals(data));
      mustVhdmount('--unmount', mnt);
      assertNothingLeft(vhd, mnt);
    }
    assertValid(vhd);
  });

  it('discards an undo disk: the VHD is byte for byte what it was', () => {
    const vhd = makePartitionedVhd('discard', 'dos');
    const before = sha256File(vhd);
    const mnt = folder('discard-mnt');
    mustVhdmount(vhd, mnt);
    fs.writeFileSync(path.join(mnt, 'scratch.bin'), patternBytes(9, 2 * MiB));
    fs.rmSync(path.join(mnt, 'lost+found'), { recursive: true });
    const listed = JSON.parse(mustVhdmount('--list', '--json')) as Array<{ file: string; mountPoint: string; mode: string; partition: number; status: string }>;
    assert.deepEqual(listed.map((m) => [m.file, m.mountPoint, m.mode, m.partition, m.status]), [[vhd, mnt, 'undo', 1, 'mounted']]);
    assert.match(mustVhdmount('--list'), new RegExp(`${mnt}: ${vhd} partition 1, undo`));
    const refused = vhdmount('--unmount', mnt);
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /--commit .* --discard/);
    mustVhdmount('--unmount', mnt, '--discard');
    assertNothingLeft(vhd, mnt);
    assert.equal(sha256File(vhd), before);
    assertValid(vhd);
    mustVhdmount(vhd, mnt, '--read-only');
    assert.deepEqual(fs.readdirSync(mnt), ['lost+found']);
    mustVhdmount('--unmount', mnt);
  });

  it('writes straight into the VHD with --direct, on a GPT disk', () => {
    const vhd = makePartitionedVhd('direct', 'gpt');
    const table = JSON.parse(mustVhdmount('--partitions', vhd, '--json')) as { scheme: string; partitions: Array<{ number: number; name: string }> };
    assert.equal(table.scheme, 'gpt');
    assert.deepEqual(table.partitions.map((p) => [p.number, p.name]), [[1, 'first'], [2, 'second']]);
    const mnt = folder('direct-mnt');
    mustVhdmount(vhd, mnt, '--partition', '2', '--direct');
    fs.writeFileSync(path.join(mnt, 'direct.txt'), 'straight in\n');
    assert.equal(vhdmount('--unmount', mnt, '--commit').status, 1, 'a direct mount has nothing to commit');
    mustVhdmount('--unmount', mnt);
    assertNothingLeft(vhd, mnt);
    assertValid(vhd);
    mustVhdmount(vhd, mnt, '--partition', '2', '--read-only');
    assert.equal(fs.readFileSync(path.join(mnt, 'direct.txt'), 'utf8'), 'straight in\n');
    assert.throws(() => fs.writeFileSync(path.join(mnt, 'nope.txt'), 'x'), /EROFS/);
    mustVhdmount('--unmount', mnt);
  });

  it('mounts a disk without a partition table whole', () => {
    const raw = path.join(work, 'whole.raw');
    fs.writeFileSync(raw, '');
    fs.truncateSync(raw, 32 * MiB);
    mustRun('mkfs.ext4', ['-q', '-F', raw]);
    const vhd = path.join(work, 'whole.vhd');
    assert.equal(vsctl(['vhd', 'convert', raw, vhd]).status, 0);
    const mnt = folder('whole-mnt');
    const refused = vhdmount(vhd, mnt, '--partition', '1');
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /no partition table/);
    assertNothingLeft(vhd, mnt);
    mustVhdmount(vhd, mnt, '--direct');
    fs.writeFileSync(path.join(mnt, 'whole.txt'), 'whole disk\n');
    mustVhdmount('--unmount', vhd);
    assertValid(vhd);
    mustVhdmount(vhd, mnt, '--read-only');
    assert.equal(fs.readFileSync(path.join(mnt, 'whole.txt'), 'utf8'), 'whole disk\n');
    mustVhdmount('--unmount', mnt);
  });

  it('refuses a VHD open for writing elsewhere, a mount point in use, a missing partition; each leaving nothing behind', async () => {
    const vhd = makePartitionedVhd('refuse', 'dos');
    const mnt = folder('refuse-mnt');
    const before = sha256File(vhd);

    const server = spawn(path.join(PROJECT_ROOT, 'bin', 'vsctl'), ['vhd', 'serve', vhd, '--socket', path.join(work, 'busy.sock'), '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(server.stdout, 'data');
    for (const mode of [[], ['--direct'], ['--read-only']]) {
      const r = vhdmount(vhd, mnt, ...mode);
      assert.equal(r.status, 1, `mounting ${mode.join(' ') || 'with undo'} a VHD another server writes`);
      assert.match(r.stderr, /open for writing by vsctl vhd serve/);
    }
    server.kill('SIGTERM');
    await once(server, 'exit');
    assertNothingLeft(vhd, mnt);

    const missing = vhdmount(vhd, mnt, '--partition', '3');
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /no partition 3; it has 1 \(25165824 bytes\), 2 \(39845888 bytes\)/);
    assertNothingLeft(vhd, mnt);

    mustVhdmount(vhd, mnt, '--read-only');
    // Even a read-only mount keeps writers (a machine starting on the disk, say) away.
    const writer = vsctl(['vhd', 'serve', vhd, '--socket', path.join(work, 'late.sock')]);
    assert.equal(writer.status, 1);
    assert.match(writer.stderr, new RegExp(`open for writing by vhdmount \\(${mnt}\\) .*\\[VHD_E_LOCKED\\]`));
    const again = vhdmount(vhd, folder('refuse-other'), '--read-only');
    assert.equal(again.status, 1);
    assert.match(again.stderr, /already mounted at/);
    const other = makePartitionedVhd('refuse-other', 'dos');
    const busy = vhdmount(other, mnt);
    assert.equal(busy.status, 1);
    assert.match(busy.stderr, /is in use/);
    assert.ok(!fs.existsSync(other.replace(/\.vhd$/, '.vhdmount-undo.vhd')) && !fs.existsSync(`${other}.lock`), 'the refused mount left its undo disk or lock');
    assert.equal((JSON.parse(mustVhdmount('--list', '--json')) as unknown[]).length, 1);
    mustVhdmount('--unmount', mnt);
    assertNothingLeft(vhd, mnt);
    assert.equal(sha256File(vhd), before);
  });

  it('an interrupted mount leaves nothing mounted and the VHD valid, at every stage', async () => {
    const vhd = makePartitionedVhd('interrupt', 'dos');
    const before = sha256File(vhd);
    const mnt = folder('interrupt-mnt');
    let interrupted = 0;
    let completed = 0;
    for (let delay = 0; delay <= 1200 && !(completed > 0 && interrupted >= 4); delay += 40) {
      const child = spawn(VHDMOUNT, [vhd, mnt], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = once(child, 'exit'); // it may finish before the signal is sent
      let stderr = '';
      let stdout = '';
      child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
      child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
      await new Promise((resolve) => setTimeout(resolve, delay));
      child.kill('SIGINT');
      const [code] = await exited as [number | null];
      assert.ok(code === 0 || code === 1 || code === null, `vhdmount exited ${code}: ${stderr}`);
      // Node restores the default SIGINT action while it exits: a signal in that window kills a
      // vhdmount that has already finished its mount and said so.
      if (code === 0 || (code === null && stdout.startsWith('mounted '))) {
        completed++;
        mustVhdmount('--unmount', mnt, '--discard');
      } else {
        interrupted++;
        // Killed before its handlers were installed (code null, nothing said), or it undid the mount and said so.
        if (code !== null) assert.match(stderr, /interrupted; the mount was undone/);
      }
      assertNothingLeft(vhd, mnt, ` after a SIGINT ${delay} ms in (exit ${code}):\n${stderr}`);
      assert.equal(sha256File(vhd), before, `after a SIGINT ${delay} ms in`);
    }
    assert.ok(interrupted >= 1, 'no SIGINT landed during a mount');
    assertValid(vhd);
  });

  it('after a kill -9 mid-mount, --unmount undoes what was set up, and the VHD mounts again', async () => {
    const vhd = makePartitionedVhd('killed', 'dos');
    const before = sha256File(vhd);
    const mnt = folder('killed-mnt');
    // More kill instants with VSERVER_CAMPAIGN_ROUNDS (the reliability campaign).
    const delays = [100, 200, 300, ...Array.from({ length: CAMPAIGN_ROUNDS - 1 }, (_, round) => killPoint(round + 1, 20, 1200))];
    for (const delay of delays) {
      const child = spawn(VHDMOUNT, [vhd, mnt], { env, stdio: 'ignore' });
      const exited = once(child, 'exit');
      await new Promise((resolve) => setTimeout(resolve, delay));
      child.kill('SIGKILL');
      await exited;
      const listed = JSON.parse(mustVhdmount('--list', '--json')) as Array<{ status: string; mountPoint: string }>;
      if (listed.length) {
        assert.equal(listed[0].mountPoint, mnt);
        const r = vhdmount('--unmount', mnt, '--discard');
        assert.equal(r.status, 0, r.stderr);
      }
      assertNothingLeft(vhd, mnt);
      assert.equal(sha256File(vhd), before);
    }
    assertValid(vhd);
    // Consistent: nothing of the killed mounts stands in the way of the next one.
    mustVhdmount(vhd, mnt);
    assert.ok(fs.readdirSync(mnt).includes('lost+found'), 'the first partition\'s ext4 is mounted');
    mustVhdmount('--unmount', mnt, '--discard');
    assertNothingLeft(vhd, mnt);
    assert.equal(sha256File(vhd), before);
  });
});


describe('vhdmount usage', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['no arguments', [], /usage: vhdmount FILE MOUNTPOINT/],
    ['--commit without --unmount', ['a.vhd', '/mnt', '--commit'], /--commit and --discard go with --unmount/],
    ['--read-only with --direct', ['a.vhd', '/mnt', '--read-only', '--direct'], /--read-only or --direct, not both/],
    ['--commit with --discard', ['--unmount', '/mnt', '--commit', '--discard'], /--commit or --discard, not both/],
    ['a partition that is not a number', ['a.vhd', '/mnt', '--partition', 'two'], /--partition must be a partition number/],
    ['--list with --unmount', ['--list', '--unmount', '/mnt'], /one of --unmount, --list and --partitions/],
    ['an unknown option', ['--frob'], /--frob/],
  ];
  for (const [what, args, message] of cases) {
    it(`${what}: exit 2 and says why`, () => {
      const r = run(VHDMOUNT, args);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, message);
    });
  }

  it('--help prints the modes', () => {
    const help = run(VHDMOUNT, ['--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /--direct .*\n.*--read-only/s);
  });

  it('without root, mounting says that it needs root', { skip: process.geteuid?.() !== 0 ? 'already not root' : false }, () => {
    const r = run('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, path.join(PROJECT_ROOT, 'dist', 'bin', 'vhdmount.js'), '/nonexistent.vhd', '/tmp']);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /vhdmount needs root/);
  });
});
