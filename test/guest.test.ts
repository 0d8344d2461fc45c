// The test guest (test/guest/build.sh) boots under bare QEMU with TCG and speaks its serial
// protocol: directly from its kernel and initrd (shell, ticker with job control, ACPI power
// button), and from its VHD through SeaBIOS and SYSLINUX on an LSI 53C895A SCSI adapter with four
// tulip NICs. Needs the guest built; fails saying how to build it otherwise.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import {
  GUEST_POWER_BUTTON_MARKER, GUEST_READY_MARKER, killAllQemu, parseGuestReport, startQemu, testGuest,
} from './helpers/guest.js';
import { QmpClient } from '../vmm/qmp.js';
import { makeTempDir, removeDir } from './helpers/vhd-fixtures.js';

const BOOT_TIMEOUT_MS = 90_000;
const dir = makeTempDir('guest');
after(async () => {
  await killAllQemu();
  removeDir(dir);
});

describe('test guest', { concurrency: true }, () => {
  it('boots from kernel + initrd: marker, shell, ticker under job control, power button', async (t) => {
    const guest = testGuest();
    const qmpSocket = path.join(dir, 'direct.qmp');
    const started = Date.now();
    const vm = startQemu([
      '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', guest.append,
      '-qmp', `unix:${qmpSocket},server=on,wait=off`,
    ]);
    try {
      const ready = await vm.waitFor(GUEST_READY_MARKER, BOOT_TIMEOUT_MS);
      t.diagnostic(`marker after ${Date.now() - started} ms`);
      const report = parseGuestReport(vm.output());
      assert.ok(report, 'VSERVER-DISKS and VSERVER-NICS before the marker');
      assert.deepEqual(report.nics, [], 'no NICs configured');
      assert.equal(vm.output().split(GUEST_READY_MARKER).length, 2, 'the marker appears once');

      const prompt = await vm.waitFor('guest# ', 20_000, ready.index);
      vm.type('echo hello\n');
      const hello = await vm.waitFor(/^hello\r?$/m, 20_000, prompt.index);

      // Job control: a background job, then %1 names it.
      vm.type('ticker &\n');
      const tick = await vm.waitFor(/^tick 2\r?$/m, 20_000, hello.index);
      vm.type('kill %1; echo killed-$?\n');
      const killed = await vm.waitFor(/^killed-0\r?$/m, 20_000, tick.index);
      await new Promise((r) => setTimeout(r, 1500));
      assert.doesNotMatch(vm.output().slice(killed.index + killed.text.length), /^tick \d+\r?$/m, 'ticker stopped');

      const qmp = await QmpClient.connectWhenReady(qmpSocket, { timeoutMs: 10_000, gone: () => vm.child.exitCode !== null });
      try {
        const shutdownEvent = qmp.waitForEvent('SHUTDOWN', 20_000);
        await qmp.execute('system_powerdown');
        const shutdown = await shutdownEvent;
        assert.equal(shutdown.data?.guest, true, `SHUTDOWN ${JSON.stringify(shutdown.data)}`);
      } finally {
        qmp.close();
      }
      let timer: NodeJS.Timeout | undefined;
      const exit = await Promise.race([vm.exited, new Promise<null>((r) => { timer = setTimeout(() => r(null), 20_000); })]);
      clearTimeout(timer);
      assert.deepEqual(exit, { code: 0, signal: null }, 'QEMU exits after the guest powers off');
      assert.match(vm.output(), new RegExp(GUEST_POWER_BUTTON_MARKER));
    } finally {
      await vm.kill();
    }
  });

  it('boots from boot.vhd on lsi53c895a: sees its disk and four tulip NICs', async (t) => {
    const guest = testGuest();
    const macs = [1, 2, 3, 4].map((n) => `00:03:ff:00:00:0${n}`);
    const started = Date.now();
    const vm = startQemu([
      '-blockdev', `driver=file,node-name=file0,filename=${guest.bootVhd},read-only=on`,
      '-blockdev', 'driver=vpc,node-name=disk0,file=file0,read-only=on',
      '-device', 'lsi53c895a,id=scsi0',
      '-device', 'scsi-hd,bus=scsi0.0,drive=disk0,bootindex=0',
      ...macs.flatMap((mac) => ['-device', `tulip,mac=${mac}`]),
    ]);
    try {
      await vm.waitFor(GUEST_READY_MARKER, BOOT_TIMEOUT_MS);
      t.diagnostic(`marker after ${Date.now() - started} ms`);
      assert.match(vm.output(), /SYSLINUX/, 'booted through SYSLINUX');
      const report = parseGuestReport(vm.output());
      assert.ok(report, 'VSERVER-DISKS and VSERVER-NICS before the marker');
      assert.ok(report.disks.includes('sda'), `disks: ${report.disks.join(' ')}`);
      assert.equal(report.nics.length, 4, `nics: ${JSON.stringify(report.nics)}`);
      for (const nic of report.nics) assert.equal(nic.driver, 'tulip', `${nic.name} driver`);
      assert.deepEqual(report.nics.map((n) => n.mac).sort(), macs);
    } finally {
      await vm.kill();
    }
  });
});
