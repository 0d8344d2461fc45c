// A VM's configuration against Virtual Server 2005 R2's machine profile: the defaults a minimal
// document gets, every limit parseVmConfig enforces (the whole document refused, each problem
// named by its field and the limit it breaks), MAC addresses under 00:03:FF, the limits under
// Virtual Server's property names, and the QEMU command line qemuArgs builds, read as text and
// then accepted by a real qemu-system-x86_64 whose devices are inspected over QMP.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ConfigErrorName, type VmConfig, VmConfigError, hardDisks, normalizeMac, parseVmConfig, randomMac, scsiAdapterOf, tapName } from '../vmm/config.js';
import { PROFILE, VIRTUAL_SERVER_LIMITS } from '../vmm/profile.js';
import { type DiskSource, type QemuLaunch, qemuArgs } from '../vmm/qemu-args.js';
import { QmpClient } from '../vmm/qmp.js';
import { killAllQemu, runQemu, type SerialQemu } from './helpers/guest.js';
import { makeTempDir, qemuCreate, removeDir } from './helpers/vhd-fixtures.js';

/** The folder the documents below pretend to live in. */
const BASE = '/srv/vms/web';
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const PROFILE_MAC = /^00:03:FF(?::[0-9A-F]{2}){3}$/;

/** parseVmConfig must throw a VmConfigError named `code` for the document; returns it. */
function refusal(document: unknown, code: ConfigErrorName = 'VM_E_CONFIG_INVALID'): VmConfigError {
  let accepted: VmConfig;
  try {
    accepted = parseVmConfig(document, BASE);
  } catch (e) {
    if (!(e instanceof VmConfigError)) throw e;
    assert.equal(e.code, code);
    assert.ok(e.problems.length > 0, 'a refusal lists at least one problem');
    return e;
  }
  assert.fail(`the document was accepted: ${JSON.stringify(document)} -> ${JSON.stringify(accepted)}`);
}

/**
 * The document is refused with a problem at `field` whose message contains every one of
 * `mentions`; the error's own message names the field too. Returns that problem's message.
 */
function refusedAt(document: unknown, field: string, ...mentions: (string | RegExp)[]): string {
  return refusedAs('VM_E_CONFIG_INVALID', document, field, ...mentions);
}

/** As refusedAt, for a document refused under `code`, which the problem at `field` carries too. */
function refusedAs(code: ConfigErrorName, document: unknown, field: string, ...mentions: (string | RegExp)[]): string {
  const error = refusal(document, code);
  const problem = error.problems.find((p) => p.field === field);
  assert.ok(problem, `no problem at ${field}; problems: ${JSON.stringify(error.problems)}`);
  assert.equal(problem.error, code);
  for (const m of mentions) {
    if (typeof m === 'string') assert.ok(problem.message.includes(m), `"${problem.message}" does not mention ${m}`);
    else assert.match(problem.message, m);
  }
  assert.ok(error.message.includes(`${field}: ${problem.message}`), `the error message names ${field}: ${error.message}`);
  return problem.message;
}

function nics(count: number): { mac: string }[] {
  return Array.from({ length: count }, (_, i) => ({ mac: `00:03:FF:00:00:${i.toString(16).padStart(2, '0')}` }));
}

function scsiDisks(count: number, prefix = 'd'): { target: number; path: string }[] {
  return Array.from({ length: count }, (_, i) => ({ target: i, path: `${prefix}${i}.vhd` }));
}

describe('parseVmConfig: defaults and paths', () => {
  test('a document with only a name gets the profile defaults: 1 processor, 128 MB, no devices, boot DVD-disk-floppy, engine auto, a fresh UUID', () => {
    const config = parseVmConfig({ name: 'x' }, BASE);
    assert.match(config.id, UUID_V4);
    const { id: _id, ...rest } = config;
    assert.deepEqual(rest, {
      name: 'x', processors: 1, memoryMB: 128, ide: [], scsi: [], networkAdapters: [], com2: null, lpt1: null, floppy: null,
      usb: [], bootOrder: ['dvd', 'disk', 'floppy'], engine: 'auto', savedState: '/srv/vms/web/x.vsv',
    });
    assert.notEqual(parseVmConfig({ name: 'x' }, BASE).id, config.id, 'each document without an id gets its own');
  });

  test('an id, a name with spaces around it and version 1 are kept (the name trimmed)', () => {
    const id = '0b1d7a4e-54c3-4bd0-9a53-3c1f7c2d9e10';
    const config = parseVmConfig({ version: 1, id, name: '  Web Server  ' }, BASE);
    assert.equal(config.id, id);
    assert.equal(config.name, 'Web Server');
    assert.equal(config.savedState, '/srv/vms/web/Web Server.vsv');
  });

  test('an adapter, a SCSI adapter and SCSI disks given without details get tulip on no network with a dynamic 00:03:FF MAC, lsi53c895a, targets by position', () => {
    const config = parseVmConfig({ name: 'x', networkAdapters: [{}, {}], scsi: [{ disks: [{ path: 'a.vhd' }, { path: 'b.vhd' }] }] }, BASE);
    assert.equal(config.networkAdapters.length, 2);
    for (const nic of config.networkAdapters) {
      assert.equal(nic.model, 'tulip');
      assert.equal(nic.network, null);
      assert.equal(nic.dynamicMac, true);
      assert.match(nic.mac, PROFILE_MAC);
    }
    assert.notEqual(config.networkAdapters[0].mac, config.networkAdapters[1].mac);
    assert.deepEqual(config.scsi, [{ model: 'lsi53c895a', disks: [{ target: 0, path: '/srv/vms/web/a.vhd' }, { target: 1, path: '/srv/vms/web/b.vhd' }] }]);
  });

  test('relative paths resolve against baseDir; absolute paths are kept', () => {
    const config = parseVmConfig({
      name: 'x',
      ide: [
        { channel: 0, device: 0, type: 'HardDisk', path: 'disks/boot.vhd' },
        { channel: 0, device: 1, type: 'HardDisk', path: '/data/shared.vhd' },
        { channel: 1, device: 0, type: 'DVD', image: '../iso/setup.iso' },
        { channel: 1, device: 1, type: 'DVD', image: null },
      ],
      scsi: [{ disks: [{ target: 5, path: './data.vhd' }] }],
      com2: { file: 'logs/com2.txt' },
      lpt1: { file: '/var/log/lpt1.txt' },
      floppy: { image: 'boot.vfd' },
      savedState: 'state/x.vsv',
    }, BASE);
    assert.deepEqual(config.ide, [
      { channel: 0, device: 0, type: 'HardDisk', path: '/srv/vms/web/disks/boot.vhd' },
      { channel: 0, device: 1, type: 'HardDisk', path: '/data/shared.vhd' },
      { channel: 1, device: 0, type: 'DVD', image: '/srv/vms/iso/setup.iso' },
      { channel: 1, device: 1, type: 'DVD', image: null },
    ]);
    assert.deepEqual(config.scsi[0].disks, [{ target: 5, path: '/srv/vms/web/data.vhd' }]);
    assert.deepEqual(config.com2, { file: '/srv/vms/web/logs/com2.txt' });
    assert.deepEqual(config.lpt1, { file: '/var/log/lpt1.txt' });
    assert.deepEqual(config.floppy, { image: '/srv/vms/web/boot.vfd' });
    assert.equal(config.savedState, '/srv/vms/web/state/x.vsv');
    assert.deepEqual(hardDisks(config), [
      { slot: 'ide0-0', path: '/srv/vms/web/disks/boot.vhd' },
      { slot: 'ide0-1', path: '/data/shared.vhd' },
      { slot: 'scsi0-5', path: '/srv/vms/web/data.vhd' },
    ]);
  });
});

describe('parseVmConfig: the profile limits', () => {
  test('processors: 1 is accepted, 2 is refused naming the limit of 1', () => {
    assert.equal(parseVmConfig({ name: 'x', processors: 1 }, BASE).processors, 1);
    refusedAt({ name: 'x', processors: 2 }, 'processors', 'exactly 1 processor', '2 is refused');
  });

  test('memoryMB: 4 and 3686 are accepted; 3 and 3687 are refused naming the limits 4 and 3686', () => {
    assert.equal(parseVmConfig({ name: 'x', memoryMB: 4 }, BASE).memoryMB, 4);
    assert.equal(parseVmConfig({ name: 'x', memoryMB: 3686 }, BASE).memoryMB, 3686);
    refusedAt({ name: 'x', memoryMB: 3 }, 'memoryMB', '3 MB', ' 4 ', '3686');
    refusedAt({ name: 'x', memoryMB: 3687 }, 'memoryMB', '3687 MB', ' 4 ', '3686');
    refusedAt({ name: 'x', memoryMB: 256.5 }, 'memoryMB', 'whole number');
    refusedAt({ name: 'x', memoryMB: '256' }, 'memoryMB', 'whole number');
  });

  test('network adapters: 4 are accepted, a 5th is refused naming the limit of 4', () => {
    assert.equal(parseVmConfig({ name: 'x', networkAdapters: nics(4) }, BASE).networkAdapters.length, 4);
    refusedAt({ name: 'x', networkAdapters: nics(5) }, 'networkAdapters', 'at most 4', '5 were given');
  });

  test('SCSI adapters: 4 are accepted, a 5th is refused naming the limit of 4', () => {
    const adapters = (n: number): unknown[] => Array.from({ length: n }, () => ({ disks: [] }));
    assert.equal(parseVmConfig({ name: 'x', scsi: adapters(4) }, BASE).scsi.length, 4);
    refusedAt({ name: 'x', scsi: adapters(5) }, 'scsi', 'at most 4 SCSI adapters', '5 were given');
  });

  test('SCSI disks: 7 on one adapter (targets 0-6) are accepted, an 8th is refused naming the limit of 7', () => {
    assert.deepEqual(parseVmConfig({ name: 'x', scsi: [{ disks: scsiDisks(7) }] }, BASE).scsi[0].disks.map((d) => d.target), [0, 1, 2, 3, 4, 5, 6]);
    refusedAs('VM_E_DRIVE_INVALID', { name: 'x', scsi: [{ disks: scsiDisks(8) }] }, 'scsi[0].disks', 'at most 7 disks', '8 were given');
  });

  test('SCSI target 7 does not exist (targets are 0 to 6)', () => {
    refusedAs('VM_E_DRIVE_INVALID', { name: 'x', scsi: [{ disks: [{ target: 7, path: 'a.vhd' }] }] }, 'scsi[0].disks[0]', '0 to 6', '7 is not');
    refusedAs('VM_E_DRIVE_INVALID', { name: 'x', scsi: [{ disks: [{ target: -1, path: 'a.vhd' }] }] }, 'scsi[0].disks[0]', '0 to 6');
  });

  test('a SCSI target used twice on one adapter is refused; the same target on two adapters is fine', () => {
    refusedAs('VM_E_DRIVE_IN_USE', { name: 'x', scsi: [{ disks: [{ target: 2, path: 'a.vhd' }, { target: 2, path: 'b.vhd' }] }] },
      'scsi[0].disks[1]', 'SCSI target 2 is already used');
    const config = parseVmConfig({ name: 'x', scsi: [{ disks: [{ target: 2, path: 'a.vhd' }] }, { disks: [{ target: 2, path: 'b.vhd' }] }] }, BASE);
    assert.deepEqual(hardDisks(config).map((d) => d.slot), ['scsi0-2', 'scsi1-2']);
  });

  test('IDE channel 2 and device 2 do not exist (2 channels of 2 devices)', () => {
    refusedAs('VM_E_DRIVE_INVALID', { name: 'x', ide: [{ channel: 2, device: 0, type: 'DVD' }] }, 'ide[0]', '2 channels (0-1)', 'channel 2 device 0 does not exist');
    refusedAs('VM_E_DRIVE_INVALID', { name: 'x', ide: [{ channel: 0, device: 2, type: 'DVD' }] }, 'ide[0]', '2 devices (0-1)', 'channel 0 device 2 does not exist');
    const four = [0, 1].flatMap((channel) => [0, 1].map((device) => ({ channel, device, type: 'DVD', image: null })));
    assert.equal(parseVmConfig({ name: 'x', ide: four }, BASE).ide.length, 4);
  });

  test('two IDE devices in the same position are refused', () => {
    refusedAs('VM_E_DRIVE_IN_USE', {
      name: 'x',
      ide: [{ channel: 1, device: 0, type: 'HardDisk', path: 'a.vhd' }, { channel: 1, device: 0, type: 'DVD', image: null }],
    }, 'ide[1]', 'IDE channel 1 device 0 is already used');
  });

  test('an IDE device that is neither a HardDisk with a path nor a DVD is refused', () => {
    refusedAt({ name: 'x', ide: [{ channel: 0, device: 0, type: 'HardDisk' }] }, 'ide[0]', 'HardDisk', 'DVD');
    refusedAt({ name: 'x', ide: [{ channel: 0, device: 0, type: 'Tape', path: 't' }] }, 'ide[0]', 'HardDisk', 'DVD');
  });

  test('USB: Keyboard, Mouse, Tablet and SmartCardReader are accepted; "Disk" is refused with the list of allowed devices', () => {
    assert.deepEqual(parseVmConfig({ name: 'x', usb: ['Keyboard', 'Mouse', 'Tablet', 'SmartCardReader'] }, BASE).usb,
      ['Keyboard', 'Mouse', 'Tablet', 'SmartCardReader']);
    refusedAt({ name: 'x', usb: ['Keyboard', 'Disk'] }, 'usb[1]', '"Disk"', 'Keyboard, Mouse, Tablet, SmartCardReader');
  });

  test('a USB device listed twice is refused', () => {
    refusedAt({ name: 'x', usb: ['Tablet', 'Tablet'] }, 'usb', 'once');
  });

  test('a MAC address outside 00:03:FF is refused naming the prefix', () => {
    refusedAt({ name: 'x', networkAdapters: [{ mac: '52:54:00:12:34:56' }] }, 'networkAdapters[0].mac', '52:54:00:12:34:56', '00:03:FF');
    refusedAt({ name: 'x', networkAdapters: [{ mac: '00:03:FF:12:34' }] }, 'networkAdapters[0].mac', '00:03:FF');
  });

  test('a MAC address is normalised to upper case with colons: 00-03-ff-0a-0b-0c becomes 00:03:FF:0A:0B:0C', () => {
    const config = parseVmConfig({ name: 'x', networkAdapters: [{ mac: '00-03-ff-0a-0b-0c' }] }, BASE);
    assert.equal(config.networkAdapters[0].mac, '00:03:FF:0A:0B:0C');
    assert.equal(normalizeMac('00-03-ff-0a-0b-0c'), '00:03:FF:0A:0B:0C');
  });

  test('the same MAC address on two adapters is refused, even written differently', () => {
    refusedAt({ name: 'x', networkAdapters: [{ mac: '00:03:FF:0A:0B:0C' }, { mac: '00:03:FF:0A:0B:0C' }] },
      'networkAdapters[1].mac', '00:03:FF:0A:0B:0C is already used');
    refusedAt({ name: 'x', networkAdapters: [{ mac: '00:03:FF:0A:0B:0C' }, { mac: '00-03-ff-0a-0b-0c' }] },
      'networkAdapters[1].mac', '00:03:FF:0A:0B:0C is already used');
  });

  test('an unknown network adapter model or SCSI model is refused with the list of known ones; a network that is no id, by its field', () => {
    refusedAt({ name: 'x', networkAdapters: [{ model: 'rtl8139' }] }, 'networkAdapters[0].model', '"rtl8139"', 'tulip, e1000, virtio');
    refusedAt({ name: 'x', networkAdapters: [{ network: 'bridge0' }] }, 'networkAdapters[0].network', '"bridge0"', 'is not a virtual network\'s id');
    refusedAt({ name: 'x', networkAdapters: [{ dynamicMac: 'yes' }] }, 'networkAdapters[0].dynamicMac', 'true or false');
    refusedAt({ name: 'x', scsi: [{ model: 'buslogic', disks: [] }] }, 'scsi[0].model', '"buslogic"', 'lsi53c895a, virtio-scsi');
  });

  test('the networks of files from before virtual networks, "none" and "loopback", read as not connected', () => {
    const config = parseVmConfig({ name: 'x', networkAdapters: [{ network: 'none' }, { network: 'loopback' }] }, BASE);
    assert.deepEqual(config.networkAdapters.map((n) => n.network), [null, null]);
  });

  test('an unknown setting ("cpu": 2) is refused by name', () => {
    refusedAt({ name: 'x', cpu: 2 }, 'cpu', 'unknown setting "cpu"');
  });

  test('the same VHD attached twice (IDE and SCSI, written differently) is refused', () => {
    refusedAt({
      name: 'x',
      ide: [{ channel: 0, device: 0, type: 'HardDisk', path: 'a.vhd' }],
      scsi: [{ disks: [{ target: 0, path: './sub/../a.vhd' }] }],
    }, '(disks)', '/srv/vms/web/a.vhd is attached more than once');
  });

  test('other malformed settings are refused by field: document, name ("/", too long, only dots), id, version, engine, bootOrder, com2, floppy, lists', () => {
    refusedAt([], '(document)', 'JSON object');
    refusedAt({}, 'name', 'needs a name');
    refusedAt({ name: 'a/b' }, 'name', '64 characters');
    refusedAt({ name: 'x'.repeat(65) }, 'name', '64 characters');
    for (const dots of ['.', '..', ' .. ', '...']) refusedAt({ name: dots }, 'name', 'not only dots');
    assert.equal(parseVmConfig({ name: '.web.' }, BASE).name, '.web.', 'dots beside other characters are a name');
    refusedAt({ name: 'x', id: 'not-a-uuid' }, 'id', 'not a UUID');
    refusedAt({ name: 'x', version: 2 }, 'version', 'version 2');
    refusedAt({ name: 'x', engine: 'hyperv' }, 'engine', '"hyperv"', 'auto, kvm, tcg');
    refusedAt({ name: 'x', bootOrder: ['cdrom'] }, 'bootOrder[0]', '"cdrom"', 'floppy, dvd, disk, network');
    refusedAt({ name: 'x', com2: 'com2.txt' }, 'com2', '{"file": PATH}');
    refusedAt({ name: 'x', floppy: { image: 3 } }, 'floppy', '.vfd');
    refusedAt({ name: 'x', usb: 'Keyboard' }, 'usb', 'must be a list');
  });

  test('several problems at once are all listed, and nothing of the document is returned', () => {
    const error = refusal({
      name: 'x', processors: 2, memoryMB: 3687, cpu: 4, usb: ['Disk'],
      networkAdapters: [{ model: 'rtl8139', mac: '52:54:00:12:34:56' }],
      ide: [{ channel: 2, device: 0, type: 'DVD' }],
    });
    assert.deepEqual(error.problems.map((p) => p.field).sort(), [
      'cpu', 'ide[0]', 'memoryMB', 'networkAdapters[0].mac', 'networkAdapters[0].model', 'processors', 'usb[0]',
    ]);
    for (const p of error.problems) assert.ok(error.message.includes(`${p.field}: ${p.message}`), `${p.field} is in the message`);
  });
});

describe('parseVmConfig: a drive position refused by its field and error name', () => {
  test('an impossible SCSI target names its field and VM_E_DRIVE_INVALID, with the limit; the error is named VM_E_DRIVE_INVALID', () => {
    const error = refusal({ name: 'web', scsi: [{ disks: [] }, { disks: [{ target: 7, path: 'a.vhd' }] }] }, 'VM_E_DRIVE_INVALID');
    assert.equal(error.problems.length, 1);
    const [problem] = error.problems;
    assert.equal(problem.field, 'scsi[1].disks[0]');
    assert.equal(problem.error, 'VM_E_DRIVE_INVALID');
    assert.match(problem.message, /7 disks, 0-6\); 7 is not/);
  });

  test('a taken position names its field, VM_E_DRIVE_IN_USE, the VM and what holds it', () => {
    const scsi = refusal({ name: 'web', scsi: [{ disks: [{ target: 3, path: 'a.vhd' }, { target: 3, path: 'b.vhd' }] }] }, 'VM_E_DRIVE_IN_USE');
    assert.deepEqual(scsi.problems.map((p) => [p.field, p.error]), [['scsi[0].disks[1]', 'VM_E_DRIVE_IN_USE']]);
    assert.match(scsi.problems[0].message, /SCSI 0:3 of web holds \/srv\/vms\/web\/a\.vhd/);
    const ide = refusal({ name: 'web', ide: [{ channel: 1, device: 1, type: 'DVD' }, { channel: 1, device: 1, type: 'HardDisk', path: 'c.vhd' }] }, 'VM_E_DRIVE_IN_USE');
    assert.deepEqual(ide.problems.map((p) => [p.field, p.error]), [['ide[1]', 'VM_E_DRIVE_IN_USE']]);
    assert.match(ide.problems[0].message, /IDE 1:1 of web holds a CD\/DVD drive/);
  });

  test('an 8th disk on a taken target names that target VM_E_DRIVE_IN_USE first, and the adapter\'s limit after it', () => {
    const disks = [...scsiDisks(7), { target: 2, path: 'd7.vhd' }];
    const error = refusal({ name: 'web', scsi: [{ disks }] }, 'VM_E_DRIVE_IN_USE');
    assert.deepEqual(error.problems.map((p) => [p.field, p.error]), [['scsi[0].disks[7]', 'VM_E_DRIVE_IN_USE'], ['scsi[0].disks', 'VM_E_DRIVE_INVALID']]);
    assert.match(error.problems[0].message, /SCSI 0:2 of web holds \/srv\/vms\/web\/d2\.vhd/);
  });

  test('a position problem beside another kind of problem: each keeps its name, the error is VM_E_CONFIG_INVALID', () => {
    const error = refusal({ name: 'web', memoryMB: 3, ide: [{ channel: 0, device: 5, type: 'DVD' }] }, 'VM_E_CONFIG_INVALID');
    assert.deepEqual(error.problems.map((p) => [p.field, p.error]).sort(), [['ide[0]', 'VM_E_DRIVE_INVALID'], ['memoryMB', 'VM_E_CONFIG_INVALID']]);
  });

  test('scsiAdapterOf refuses an adapter the VM lacks as scsi[N], VM_E_DRIVE_INVALID, naming the VM, its adapters and AddSCSIController', () => {
    const config = parseVmConfig({ name: 'web', scsi: [{ disks: [] }] }, BASE);
    assert.equal(scsiAdapterOf(config, 0), config.scsi[0]);
    assert.throws(() => scsiAdapterOf(config, 2), (e: unknown) => {
      assert.ok(e instanceof VmConfigError);
      assert.equal(e.code, 'VM_E_DRIVE_INVALID');
      assert.deepEqual(e.problems.map((p) => [p.field, p.error]), [['scsi[2]', 'VM_E_DRIVE_INVALID']]);
      assert.match(e.message, /^scsi\[2\]: web has 1 SCSI adapter \(0-0\); add one with AddSCSIController first \(at most 4\)$/);
      return true;
    });
  });
});

describe('MAC addresses and the published limits', () => {
  test('randomMac always gives an address under 00:03:FF, different ones from call to call', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const mac = randomMac();
      assert.match(mac, PROFILE_MAC);
      seen.add(mac);
    }
    assert.ok(seen.size > 190, `200 random MACs gave only ${seen.size} distinct ones`);
  });

  test('randomMac draws again while the address it drew is taken', (t) => {
    const draws = [[0x01, 0x02, 0x03], [0x0a, 0x0b, 0x0c], [0xab, 0xcd, 0xef]];
    const getRandomValues = t.mock.method(globalThis.crypto, 'getRandomValues', <T extends ArrayBufferView | null>(array: T): T => {
      (array as unknown as Uint8Array).set(draws.shift()!);
      return array;
    });
    const mac = randomMac(new Set(['00:03:FF:01:02:03', '00:03:FF:0A:0B:0C']));
    assert.equal(mac, '00:03:FF:AB:CD:EF');
    assert.equal(getRandomValues.mock.callCount(), 3);
  });

  test('VIRTUAL_SERVER_LIMITS gives the profile under Virtual Server\'s property names', () => {
    assert.deepEqual({ ...VIRTUAL_SERVER_LIMITS }, {
      MaximumMemoryPerVM: 3686,
      MinimumMemoryPerVM: 4,
      MaximumNumberOfProcessorsPerVM: 1,
      MaximumNetworkAdaptersPerVM: 4,
      MaximumNumberOfIDEBuses: 2,
      MaximumNumberOfIDEDevicesPerBus: 2,
      MaximumNumberOfSCSIControllers: 4,
      MaximumNumberOfSCSIDevicesPerController: 7,
      MaximumNumberOfSerialPorts: 2,
      MaximumNumberOfParallelPorts: 1,
      MaximumNumberOfFloppyDrives: 1,
      VideoMemoryMB: 4,
    });
    assert.equal(VIRTUAL_SERVER_LIMITS.MaximumMemoryPerVM, PROFILE.memoryMB.max);
    assert.equal(VIRTUAL_SERVER_LIMITS.MinimumMemoryPerVM, PROFILE.memoryMB.min);
    assert.equal(VIRTUAL_SERVER_LIMITS.MaximumNetworkAdaptersPerVM, PROFILE.networkAdapters.max);
    assert.equal(VIRTUAL_SERVER_LIMITS.MaximumNumberOfSCSIControllers, PROFILE.scsi.adapters);
    assert.equal(VIRTUAL_SERVER_LIMITS.MaximumNumberOfSCSIDevicesPerController, PROFILE.scsi.disksPerAdapter);
    assert.equal(VIRTUAL_SERVER_LIMITS.MaximumNumberOfIDEBuses, PROFILE.ide.channels);
    assert.equal(VIRTUAL_SERVER_LIMITS.MaximumNumberOfIDEDevicesPerBus, PROFILE.ide.devicesPerChannel);
    assert.equal(VIRTUAL_SERVER_LIMITS.VideoMemoryMB, PROFILE.video.memoryMB);
  });
});

// ---------------------------------------------------------------------------------------------
// The QEMU command line

const MACS = ['00:03:FF:0A:0B:0C', '00:03:FF:0A:0B:0D', '00:03:FF:0A:0B:0E'];
const NETWORK_ID = '2b1f4c3e-7a0d-4c55-9e61-0a1b2c3d4e5f';

/** The machine of the brief: IDE disk + empty DVD, two SCSI adapters, one NIC per model, COM2, USB, a floppy drive. */
function fullDocument(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'web', memoryMB: 96,
    ide: [{ channel: 0, device: 0, type: 'HardDisk', path: 'ide.vhd' }, { channel: 1, device: 0, type: 'DVD', image: null }],
    scsi: [
      { model: 'lsi53c895a', disks: [{ target: 0, path: 'lsi.vhd' }] },
      { model: 'virtio-scsi', disks: [{ target: 3, path: 'virtio.vhd' }] },
    ],
    networkAdapters: [
      { model: 'tulip', network: null, mac: MACS[0] },
      { model: 'e1000', network: NETWORK_ID, mac: MACS[1] },
      { model: 'virtio', network: NETWORK_ID, mac: MACS[2], dynamicMac: false },
    ],
    com2: { file: 'logs/com,2.txt' },
    usb: ['Keyboard', 'Tablet'],
    floppy: { image: null },
    engine: 'tcg',
    ...overrides,
  };
}

function launchFor(config: VmConfig, dir: string, overrides: Partial<QemuLaunch> = {}): QemuLaunch {
  const disks = new Map<string, DiskSource>(hardDisks(config).map((d) => [d.slot, { kind: 'vhd-file', path: d.path }]));
  return {
    config, engine: 'tcg', qmpSocket: path.join(dir, 'qmp.sock'), vncSocket: path.join(dir, 'vnc.sock'),
    taps: config.networkAdapters.map(() => null), disks, incoming: false, runAs: null, ...overrides,
  };
}

/** Every value that follows `flag` in the argument list. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag && i + 1 < args.length ? [args[i + 1]] : []));
}

function only(args: string[], flag: string): string {
  const found = values(args, flag);
  assert.equal(found.length, 1, `${flag} appears ${found.length} times in ${args.join(' ')}`);
  return found[0];
}

/** The -device values by driver (the text before the first comma). */
function devicesByDriver(args: string[]): Map<string, string[]> {
  const byDriver = new Map<string, string[]>();
  for (const device of values(args, '-device')) {
    const driver = device.split(',')[0];
    byDriver.set(driver, [...(byDriver.get(driver) ?? []), device]);
  }
  return byDriver;
}

function driverCounts(args: string[]): Record<string, number> {
  return Object.fromEntries([...devicesByDriver(args)].map(([driver, list]) => [driver, list.length]));
}

/** The device with that id= (exactly one). */
function deviceWithId(args: string[], id: string): string {
  const found = values(args, '-device').filter((d) => d.split(',').includes(`id=${id}`));
  assert.equal(found.length, 1, `devices with id=${id}: ${JSON.stringify(found)}`);
  return found[0];
}

/** id -> bootindex of every device that has one. */
function bootIndexes(args: string[]): Record<string, number> {
  const result: Record<string, number> = {};
  for (const device of values(args, '-device')) {
    const id = /(?:^|,)id=([^,]+)/.exec(device)?.[1];
    const index = /(?:^|,)bootindex=(\d+)/.exec(device)?.[1];
    if (id && index) result[id] = Number(index);
  }
  return result;
}

describe('qemuArgs: the command line', () => {
  const config = parseVmConfig(fullDocument(), BASE);
  const args = qemuArgs(launchFor(config, '/run/vserver/web', { taps: config.networkAdapters.map((_, i) => (i === 0 ? null : tapName(config.id, i))) }));

  test('the machine is -nodefaults, i440FX "pc", 1 processor and the configured memory, on the chosen engine', () => {
    assert.ok(args.includes('-nodefaults'));
    assert.ok(args.includes('-no-user-config'));
    assert.equal(only(args, '-machine'), 'pc');
    assert.equal(only(args, '-smp'), '1');
    assert.equal(only(args, '-m'), '96M');
    assert.equal(only(args, '-accel'), 'tcg');
    assert.equal(only(args, '-uuid'), config.id);
    assert.equal(only(args, '-name'), 'guest=web,debug-threads=on');
    assert.equal(only(qemuArgs(launchFor(config, '/run/vserver/web', { engine: 'kvm' })), '-accel'), 'kvm');
  });

  test('exactly the configured devices are on the command line, counted per driver', () => {
    assert.deepEqual(driverCounts(args), {
      'VGA': 1, 'e1000': 1, 'floppy': 1, 'ide-cd': 1, 'ide-hd': 1, 'isa-serial': 2, 'lsi53c895a': 1, 'piix3-usb-uhci': 1,
      'scsi-hd': 2, 'tulip': 1, 'usb-kbd': 1, 'usb-tablet': 1, 'virtio-net-pci': 1, 'virtio-scsi-pci': 1,
    });
    assert.deepEqual(values(args, '-device').filter((d) => d.startsWith('VGA')), ['VGA,vgamem_mb=4']);
  });

  test('disks sit in their slots: IDE by channel and unit, SCSI by adapter bus and scsi-id, each from its VHD', () => {
    assert.match(deviceWithId(args, 'ide0-0'), /^ide-hd,drive=ide0-0,bus=ide\.0,unit=0,/);
    assert.match(deviceWithId(args, 'ide1-0'), /^ide-cd,bus=ide\.1,unit=0,/);
    assert.doesNotMatch(deviceWithId(args, 'ide1-0'), /drive=/, 'the empty DVD drive has no medium');
    assert.equal(deviceWithId(args, 'scsi0'), 'lsi53c895a,id=scsi0');
    assert.equal(deviceWithId(args, 'scsi1'), 'virtio-scsi-pci,id=scsi1');
    assert.match(deviceWithId(args, 'scsi0-0'), /^scsi-hd,bus=scsi0\.0,scsi-id=0,lun=0,drive=scsi0-0,/);
    assert.match(deviceWithId(args, 'scsi1-3'), /^scsi-hd,bus=scsi1\.0,scsi-id=3,lun=0,drive=scsi1-3,/);
    const nodes = values(args, '-blockdev').map((b) => JSON.parse(b) as Record<string, unknown>);
    for (const [slot, file] of [['ide0-0', 'ide.vhd'], ['scsi0-0', 'lsi.vhd'], ['scsi1-3', 'virtio.vhd']]) {
      assert.deepEqual(nodes.find((n) => n['node-name'] === slot), { driver: 'vpc', 'node-name': slot, file: `${slot}-file` });
      assert.deepEqual(nodes.find((n) => n['node-name'] === `${slot}-file`), { driver: 'file', 'node-name': `${slot}-file`, filename: path.join(BASE, file) });
    }
    assert.equal(nodes.length, 6);
  });

  test('network adapters carry the configured MACs in lower case; an adapter with a TAP has it as its backend, one without has none', () => {
    assert.match(deviceWithId(args, 'nic0'), /^tulip,id=nic0,mac=00:03:ff:0a:0b:0c(,|$)/);
    assert.match(deviceWithId(args, 'nic1'), /^e1000,id=nic1,mac=00:03:ff:0a:0b:0d,.*netdev=net1$/);
    assert.match(deviceWithId(args, 'nic2'), /^virtio-net-pci,id=nic2,mac=00:03:ff:0a:0b:0e,.*netdev=net2$/);
    assert.doesNotMatch(deviceWithId(args, 'nic0'), /netdev=/);
    assert.deepEqual(values(args, '-netdev'), [1, 2].map((i) => `tap,id=net${i},ifname=${tapName(config.id, i)},script=no,downscript=no`));
  });

  test('COM1 is the stdio console; COM2 writes to its file with the comma in the path doubled', () => {
    assert.deepEqual(values(args, '-chardev'), ['stdio,id=com1,signal=off', 'file,id=com2,path=/srv/vms/web/logs/com,,2.txt']);
    assert.deepEqual(devicesByDriver(args).get('isa-serial'), ['isa-serial,chardev=com1,index=0', 'isa-serial,chardev=com2,index=1']);
    const lpt = qemuArgs(launchFor(parseVmConfig(fullDocument({ lpt1: { file: 'lpt.txt' } }), BASE), '/run/vserver/web'));
    assert.ok(values(lpt, '-chardev').includes('file,id=lpt1,path=/srv/vms/web/lpt.txt'));
    assert.deepEqual(devicesByDriver(lpt).get('isa-parallel'), ['isa-parallel,chardev=lpt1,index=0']);
  });

  test('USB devices hang off the PIIX3 UHCI controller; the floppy drive is unit 0', () => {
    assert.deepEqual(values(args, '-device').filter((d) => d.startsWith('usb-') || d.startsWith('piix3-usb')),
      ['piix3-usb-uhci,id=usb', 'usb-kbd,bus=usb.0', 'usb-tablet,bus=usb.0']);
    assert.equal(deviceWithId(args, 'fd0'), 'floppy,unit=0,id=fd0');
  });

  test('sockets: VNC and QMP on the VM\'s unix sockets; the processor starts stopped (-S)', () => {
    assert.equal(only(args, '-vnc'), 'unix:/run/vserver/web/vnc.sock');
    assert.equal(only(args, '-qmp'), 'unix:/run/vserver/web/qmp.sock,server=on,wait=off');
    assert.equal(only(args, '-display'), 'none');
    assert.ok(args.includes('-S'));
    const commas = qemuArgs(launchFor(config, '/run/a,b'));
    assert.equal(only(commas, '-qmp'), 'unix:/run/a,,b/qmp.sock,server=on,wait=off');
  });

  test('-incoming defer only when a saved state is to be streamed in', () => {
    assert.equal(args.includes('-incoming'), false);
    const incoming = qemuArgs(launchFor(config, '/run/vserver/web', { incoming: true }));
    assert.equal(only(incoming, '-incoming'), 'defer');
  });

  test('the sandbox denies spawning always, and privilege changes unless QEMU must drop to -runas USER', () => {
    const sandbox = only(args, '-sandbox').split(',');
    assert.equal(sandbox[0], 'on');
    assert.ok(sandbox.includes('spawn=deny'));
    assert.ok(sandbox.includes('elevateprivileges=deny'));
    assert.equal(args.includes('-runas'), false);
    const dropping = qemuArgs(launchFor(config, '/run/vserver/web', { runAs: 'vserver' }));
    const dropSandbox = only(dropping, '-sandbox').split(',');
    assert.ok(dropSandbox.includes('spawn=deny'));
    assert.ok(dropSandbox.includes('elevateprivileges=allow'));
    assert.equal(only(dropping, '-runas'), 'vserver');
  });

  test('bootindex follows bootOrder by kind, disks in slot order (IDE, then SCSI); empty drives get none', () => {
    const withMedia = (bootOrder: string[]): Record<string, number> => bootIndexes(qemuArgs(launchFor(parseVmConfig(fullDocument({
      bootOrder,
      ide: [{ channel: 0, device: 0, type: 'HardDisk', path: 'ide.vhd' }, { channel: 1, device: 0, type: 'DVD', image: 'setup.iso' }],
    }), BASE), '/run/vserver/web')));
    assert.deepEqual(withMedia(['dvd', 'disk', 'network']), {
      'ide1-0': 1, 'ide0-0': 2, 'scsi0-0': 3, 'scsi1-3': 4, nic0: 5, nic1: 6, nic2: 7,
    });
    assert.deepEqual(withMedia(['network', 'disk']), {
      nic0: 1, nic1: 2, nic2: 3, 'ide0-0': 4, 'scsi0-0': 5, 'scsi1-3': 6,
    });
    // The default order (dvd, disk, floppy) with an empty DVD drive and an empty floppy drive: disks only.
    assert.deepEqual(bootIndexes(args), { 'ide0-0': 1, 'scsi0-0': 2, 'scsi1-3': 3 });
  });

  test('a DVD image is attached read-only through a raw node', () => {
    const dvd = qemuArgs(launchFor(parseVmConfig(fullDocument({
      ide: [{ channel: 1, device: 1, type: 'DVD', image: 'setup.iso' }],
    }), BASE), '/run/vserver/web'));
    assert.match(deviceWithId(dvd, 'ide1-1'), /^ide-cd,drive=ide1-1,bus=ide\.1,unit=1,/);
    const nodes = values(dvd, '-blockdev').map((b) => JSON.parse(b) as Record<string, unknown>);
    assert.deepEqual(nodes.find((n) => n['node-name'] === 'ide1-1'), { driver: 'raw', 'node-name': 'ide1-1', file: 'ide1-1-file', 'read-only': true });
    assert.deepEqual(nodes.find((n) => n['node-name'] === 'ide1-1-file'),
      { driver: 'file', 'node-name': 'ide1-1-file', filename: '/srv/vms/web/setup.iso', 'read-only': true });
  });

  test('a disk without a source is an error naming its slot', () => {
    assert.throws(() => qemuArgs(launchFor(config, '/run/vserver/web', { disks: new Map() })), /no source for disk ide0-0/);
  });

  test('NBD disk sources become nbd blockdevs on the worker\'s socket', () => {
    const disks = new Map<string, DiskSource>(hardDisks(config).map((d) => [d.slot, { kind: 'nbd', socket: '/run/vserver/web/nbd.sock', export: d.slot }]));
    const nbd = values(qemuArgs(launchFor(config, '/run/vserver/web', { disks })), '-blockdev').map((b) => JSON.parse(b) as Record<string, unknown>);
    assert.deepEqual(nbd.map((n) => n['node-name']), ['ide0-0', 'scsi0-0', 'scsi1-3']);
    assert.deepEqual(nbd[1], { driver: 'nbd', 'node-name': 'scsi0-0', server: { type: 'unix', path: '/run/vserver/web/nbd.sock' }, export: 'scsi0-0' });
  });

  // QEMU refuses two devices with one bootindex, so a kind listed twice is refused up front.
  test('a boot device kind listed twice is refused', () => {
    const document = {
      name: 't', bootOrder: ['disk', 'disk'],
      ide: [{ channel: 0, device: 0, type: 'HardDisk', path: 'a.vhd' }, { channel: 0, device: 1, type: 'HardDisk', path: 'b.vhd' }],
    };
    assert.throws(() => parseVmConfig(document, BASE), (e) => e instanceof VmConfigError && e.problems.some((p) => p.field === 'bootOrder'));
  });
});

// ---------------------------------------------------------------------------------------------
// The same command line on a real QEMU

/** Connects to QEMU's QMP socket once it listens; fails with QEMU's stderr when QEMU exits first. */
async function connectWhenReady(qemu: SerialQemu, socket: string, timeoutMs = 15_000): Promise<QmpClient> {
  try {
    return await QmpClient.connectWhenReady(socket, { timeoutMs, gone: () => qemu.child.exitCode !== null || qemu.child.signalCode !== null });
  } catch (e) {
    assert.fail(`${(e as Error).message}:\n${qemu.stderr()}`);
  }
}

/** The block of `info qtree` describing the device `dev: DRIVER, id "ID"` (its line and everything indented under it). */
function qtreeBlock(qtree: string, driver: string, id: string): string {
  const lines = qtree.split('\n');
  const start = lines.findIndex((l) => l.trim() === `dev: ${driver}, id "${id}"`);
  assert.ok(start >= 0, `info qtree has no ${driver} with id "${id}"`);
  const indent = lines[start].search(/\S/);
  let end = start + 1;
  while (end < lines.length && (lines[end].trim() === '' || lines[end].search(/\S/) > indent)) end++;
  return lines.slice(start, end).join('\n');
}

interface PciDevice { qdev_id: string; id: { vendor: number; device: number }; class_info: { class: number } }

describe('qemuArgs on a real qemu-system-x86_64', { timeout: 120_000 }, () => {
  const dir = makeTempDir('vmconfig');
  let config: VmConfig;
  let args: string[];
  let qemu: SerialQemu;
  let qmp: QmpClient | null = null;

  before(async () => {
    for (const file of ['ide.vhd', 'lsi.vhd', 'virtio.vhd']) qemuCreate(path.join(dir, file), '16M', ['subformat=dynamic']);
    fs.mkdirSync(path.join(dir, 'logs'));
    config = parseVmConfig(fullDocument(), dir);
    // No TAPs (launchFor's default): this runs in the machine's own network namespace; TAP backends are test/networks-vm.test.ts's.
    const launch = launchFor(config, dir);
    args = qemuArgs(launch);
    qemu = runQemu(args, 60_000);
    qmp = await connectWhenReady(qemu, launch.qmpSocket);
  });

  after(async () => {
    qmp?.close();
    await killAllQemu();
    removeDir(dir);
  });

  test('QEMU accepts the command line (sandbox on) and waits with the processor stopped, under the VM\'s name and UUID', async () => {
    assert.deepEqual(await qmp!.execute('query-status'), { status: 'prelaunch', singlestep: false, running: false });
    assert.deepEqual(await qmp!.execute('query-name'), { name: 'web' });
    assert.deepEqual(await qmp!.execute('query-uuid'), { UUID: config.id });
    assert.equal((await qmp!.execute<{ enabled: boolean }>('query-kvm')).enabled, false, 'TCG, not KVM');
  });

  test('query-pci shows the LSI and virtio SCSI adapters, tulip, e1000 and virtio-net, the UHCI controller and the VGA', async () => {
    const [bus] = await qmp!.execute<{ devices: PciDevice[] }[]>('query-pci');
    const byId = new Map(bus.devices.filter((d) => d.qdev_id).map((d) => [d.qdev_id, d]));
    const ids = (qdevId: string): string => {
      const d = byId.get(qdevId);
      assert.ok(d, `no PCI device with id ${qdevId}`);
      return `${d.id.vendor.toString(16).padStart(4, '0')}:${d.id.device.toString(16).padStart(4, '0')}`;
    };
    assert.equal(ids('scsi0'), '1000:0012', 'LSI 53C895A');
    assert.equal(ids('scsi1'), '1af4:1004', 'virtio SCSI');
    assert.equal(ids('nic0'), '1011:0019', 'DEC 21143 (tulip)');
    assert.equal(ids('nic1'), '8086:100e', 'Intel 82540EM (e1000)');
    assert.equal(ids('nic2'), '1af4:1000', 'virtio network');
    assert.equal(ids('usb'), '8086:7020', 'PIIX3 UHCI');
    const vga = bus.devices.filter((d) => d.class_info.class === 0x0300);
    assert.deepEqual(vga.map((d) => `${d.id.vendor.toString(16)}:${d.id.device.toString(16)}`), ['1234:1111'], 'one standard VGA');
    const network = bus.devices.filter((d) => d.class_info.class === 0x0200);
    assert.equal(network.length, 3, 'no network adapter beyond the configured three');
  });

  test('info qtree shows each device with its configured properties: MACs, SCSI ids, USB devices, 4 MB of video memory, the floppy drive', async () => {
    const qtree = await qmp!.execute<string>('human-monitor-command', { 'command-line': 'info qtree' });
    assert.match(qtreeBlock(qtree, 'tulip', 'nic0'), /mac = "00:03:ff:0a:0b:0c"/);
    assert.match(qtreeBlock(qtree, 'e1000', 'nic1'), /mac = "00:03:ff:0a:0b:0d"/);
    assert.match(qtreeBlock(qtree, 'virtio-net-pci', 'nic2'), /mac = "00:03:ff:0a:0b:0e"/);
    const lsi = qtreeBlock(qtree, 'lsi53c895a', 'scsi0');
    assert.match(lsi, /dev: scsi-hd, id "scsi0-0"[\s\S]*scsi-id = 0 /);
    const virtio = qtreeBlock(qtree, 'virtio-scsi-pci', 'scsi1');
    assert.match(virtio, /dev: scsi-hd, id "scsi1-3"[\s\S]*scsi-id = 3 /);
    const usb = qtreeBlock(qtree, 'piix3-usb-uhci', 'usb');
    assert.match(usb, /dev: usb-kbd, id ""/);
    assert.match(usb, /dev: usb-tablet, id ""/);
    assert.doesNotMatch(usb, /dev: usb-mouse|dev: usb-ccid/);
    assert.match(qtreeBlock(qtree, 'VGA', ''), /vgamem_mb = 4 /);
    assert.match(qtreeBlock(qtree, 'ide-hd', 'ide0-0'), /drive = "ide0-0"/);
    assert.match(qtreeBlock(qtree, 'ide-cd', 'ide1-0'), /drive = ""/);
    assert.match(qtreeBlock(qtree, 'floppy', 'fd0'), /drive = ""/);
    assert.equal((qtree.match(/dev: isa-serial,/g) ?? []).length, 2, 'COM1 and COM2');
    assert.equal((await qmp!.execute('qom-get', { path: '/machine/peripheral/scsi1-3', property: 'bootindex' })), 3);
    assert.equal((await qmp!.execute('qom-get', { path: '/machine/peripheral/ide0-0', property: 'bootindex' })), 1);
  });

  test('query-block shows the three VHDs through the vpc driver, and the empty DVD and floppy drives', async () => {
    const blocks = await qmp!.execute<{ qdev: string; inserted?: { 'node-name': string; drv: string; file: string; ro: boolean } }[]>('query-block');
    const byDevice = new Map(blocks.map((b) => [b.qdev, b]));
    for (const [slot, file] of [['ide0-0', 'ide.vhd'], ['scsi0-0', 'lsi.vhd'], ['scsi1-3', 'virtio.vhd']]) {
      const inserted = byDevice.get(slot)?.inserted;
      assert.ok(inserted, `query-block has no medium in ${slot}: ${JSON.stringify(blocks)}`);
      assert.equal(inserted['node-name'], slot);
      assert.equal(inserted.drv, 'vpc');
      assert.equal(inserted.file, path.join(dir, file));
      assert.equal(inserted.ro, false);
    }
    assert.equal(byDevice.get('ide1-0')?.inserted, undefined, 'the DVD drive is empty');
    assert.equal(byDevice.get('fd0')?.inserted, undefined, 'the floppy drive is empty');
    assert.equal(blocks.length, 5);
  });

  test('the COM2 file with a comma in its name is created', () => {
    assert.ok(fs.existsSync(path.join(dir, 'logs', 'com,2.txt')), `logs/com,2.txt: ${fs.readdirSync(path.join(dir, 'logs')).join(', ')}`);
  });

  test('quit ends QEMU with status 0', async () => {
    await qmp!.execute('quit');
    const exit = await qemu.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, qemu.stderr());
  });

  /**
   * Starts QEMU for the document in a folder of its own (creating its VHDs, DVD and floppy
   * images), runs `check` over QMP, then quits QEMU and expects it to exit with status 0.
   */
  async function startAndCheck(label: string, document: Record<string, unknown>, overrides: Partial<QemuLaunch>,
    check: (client: QmpClient, config: VmConfig, qemu: SerialQemu) => Promise<void>): Promise<void> {
    const vmDir = path.join(dir, label);
    fs.mkdirSync(vmDir);
    const vm = parseVmConfig(document, vmDir);
    for (const disk of hardDisks(vm)) qemuCreate(disk.path, '16M', ['subformat=dynamic']);
    for (const d of vm.ide) if (d.type === 'DVD' && d.image) fs.writeFileSync(d.image, Buffer.alloc(2048 * 16));
    if (vm.floppy?.image) fs.writeFileSync(vm.floppy.image, Buffer.alloc(1_474_560));
    for (const port of [vm.com2, vm.lpt1]) if (port) fs.mkdirSync(path.dirname(port.file), { recursive: true });
    const launch = launchFor(vm, vmDir, overrides);
    const other = runQemu(qemuArgs(launch), 60_000);
    const client = await connectWhenReady(other, launch.qmpSocket);
    try {
      await check(client, vm, other);
      await client.execute('quit');
      assert.deepEqual(await other.exited, { code: 0, signal: null }, other.stderr());
    } finally {
      client.close();
    }
  }

  test('with incoming, QEMU waits for a saved state (status inmigrate)', async () => {
    await startAndCheck('incoming', fullDocument(), { incoming: true }, async (client) => {
      assert.equal((await client.execute<{ status: string }>('query-status')).status, 'inmigrate');
    });
  });

  test('the largest machine the profile allows starts: 4 IDE devices, 4 SCSI adapters of 7 disks, 4 adapters, COM2, LPT1, every USB device', async () => {
    const scsi = ['lsi53c895a', 'virtio-scsi', 'lsi53c895a', 'virtio-scsi'].map((model, a) => ({ model, disks: scsiDisks(7, `s${a}-`) }));
    const document = fullDocument({
      name: 'largest',
      ide: [
        { channel: 0, device: 0, type: 'HardDisk', path: 'ide00.vhd' }, { channel: 0, device: 1, type: 'HardDisk', path: 'ide01.vhd' },
        { channel: 1, device: 0, type: 'DVD', image: 'setup.iso' }, { channel: 1, device: 1, type: 'DVD', image: null },
      ],
      scsi,
      networkAdapters: [{ model: 'tulip' }, { model: 'e1000' }, { model: 'virtio' }, { model: 'tulip', network: null }],
      com2: { file: 'com2.txt' }, lpt1: { file: 'lpt1.txt' },
      usb: ['Keyboard', 'Mouse', 'Tablet', 'SmartCardReader'],
      bootOrder: ['dvd', 'disk', 'network'],
    });
    await startAndCheck('largest', document, {}, async (client, vm) => {
      const blocks = await client.execute<{ qdev: string; inserted?: { drv: string } }[]>('query-block');
      const vhds = blocks.filter((b) => b.inserted?.drv === 'vpc').map((b) => b.qdev).sort();
      assert.deepEqual(vhds, hardDisks(vm).map((d) => d.slot).sort());
      assert.equal(vhds.length, 2 + 4 * 7);
      assert.equal(blocks.find((b) => b.qdev === 'ide1-0')?.inserted?.drv, 'raw', 'the DVD image');
      const [bus] = await client.execute<{ devices: PciDevice[] }[]>('query-pci');
      assert.equal(bus.devices.filter((d) => d.class_info.class === 0x0100).length, 4, 'SCSI controllers');
      assert.equal(bus.devices.filter((d) => d.class_info.class === 0x0200).length, 4, 'network adapters');
      const qtree = await client.execute<string>('human-monitor-command', { 'command-line': 'info qtree' });
      const usb = qtreeBlock(qtree, 'piix3-usb-uhci', 'usb');
      for (const device of ['usb-kbd', 'usb-mouse', 'usb-tablet', 'usb-ccid']) assert.match(usb, new RegExp(`dev: ${device}, id ""`));
      assert.match(qtree, /dev: isa-parallel, id ""/);
      assert.equal(await client.execute('qom-get', { path: '/machine/peripheral/ide1-0', property: 'bootindex' }), 1, 'the DVD boots first');
      assert.equal(await client.execute('qom-get', { path: '/machine/peripheral/nic3', property: 'bootindex' }), 1 + 30 + 4, 'after the DVD and the 30 disks');
    });
  });

  test('with runAs, QEMU drops to that user under its seccomp filter and still runs the machine (when the tests run as root)', async (t) => {
    if (process.geteuid?.() !== 0) {
      t.skip('-runas needs root');
      return;
    }
    await startAndCheck('runas', fullDocument({ name: 'runas', com2: null }), { runAs: 'nobody' }, async (client, _vm, other) => {
      const status = fs.readFileSync(`/proc/${other.child.pid}/status`, 'utf8');
      assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m, 'QEMU runs as nobody');
      assert.match(status, /^Seccomp:\s+2$/m, 'under a seccomp filter');
      await client.execute('cont');
      assert.equal((await client.execute<{ status: string }>('query-status')).status, 'running');
    });
  });

  test('a floppy image in the boot order starts (the boot index is on the controller)', async () => {
    await startAndCheck('floppy', { name: 'f', floppy: { image: 'boot.vfd' } }, {}, async () => {});
  });

  test('a VM named with "=" starts under that name', async () => {
    await startAndCheck('equals', { name: 'web=1' }, {}, async (client) => {
      assert.deepEqual(await client.execute('query-name'), { name: 'web=1' });
    });
  });
});
