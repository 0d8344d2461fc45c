// What a caller hears when something fails, against the error catalogue: a Node errno error is
// VM_E_INTERNAL (never "ENOENT"), in vserverd and in a VM's worker; the refusals at the HTTP
// level carry the catalogue's status, name and code; and the names no other test provoked, made
// to happen for real through a running vserverd.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ERRORS, type ErrorName } from '../server/error-catalogue.js';
import { toApiError } from '../server/errors.js';
import { isAlive } from '../host/process.js';
import { VhdError, createDifferencing, createDynamic } from '../storage/vhd/index.js';
import { MAX_CHAIN_DEPTH } from '../storage/vhd/disk.js';
import { FOOTER_SIZE, HEADER_SIZE, decodeFooter, decodeHeader, encodeFooter, encodeHeader } from '../storage/vhd/format.js';
import { VmError, vmErrorCode } from '../vmm/state.js';
import { controlError } from '../vmm/worker/control.js';
import { TestServer, rejectsWith } from './helpers/server.js';
import { delay, waitFor } from './helpers/wait.js';

interface Ref { $ref: string }
interface ErrorBody { jsonrpc: string; id: unknown; error: { code: number; message: string; data: { name: string } } }

function errnoError(): NodeJS.ErrnoException {
  try {
    fs.readFileSync('/nonexistent/vserver-error-test');
  } catch (e) {
    return e as NodeJS.ErrnoException;
  }
  assert.fail('reading a missing file succeeded');
}

describe('errors no layer names', () => {
  test('toApiError of a Node errno error is VM_E_INTERNAL under -32603, with the cause in the message and in the log', (t) => {
    const logged: unknown[][] = [];
    t.mock.method(console, 'error', (...args: unknown[]) => { logged.push(args); });
    const cause = errnoError();
    assert.equal(cause.code, 'ENOENT');
    const error = toApiError(cause);
    assert.equal(error.errorName, 'VM_E_INTERNAL');
    assert.equal(ERRORS[error.errorName].rpc, -32603);
    assert.match(error.message, /no such file or directory/);
    assert.ok(logged.some((args) => args.includes(cause)), 'the cause is logged with its stack');
  });

  test('a VM worker answers an errno error as VM_E_INTERNAL with its cause, and keeps the VMM\'s and the VHD engine\'s codes', () => {
    const answer = controlError(errnoError());
    assert.equal(answer.code, 'VM_E_INTERNAL');
    assert.match(answer.message, /the VM worker failed: .*no such file or directory/);
    assert.deepEqual(controlError(new VmError('VM_E_VM_NOT_RUNNING', 'off')), { code: 'VM_E_VM_NOT_RUNNING', message: 'off' });
    assert.deepEqual(controlError(new VhdError('VHD_E_LOCKED', 'held')), { code: 'VHD_E_LOCKED', message: 'held' });
  });

  test('a code a worker sends that neither the VMM nor the VHD engine declares is read as VM_E_INTERNAL', () => {
    assert.equal(vmErrorCode('ENOENT'), 'VM_E_INTERNAL');
    assert.equal(vmErrorCode(undefined), 'VM_E_INTERNAL');
    assert.equal(vmErrorCode('VM_E_MAC_IN_USE'), 'VM_E_MAC_IN_USE');
    assert.equal(vmErrorCode('VHD_E_LOCKED'), 'VHD_E_LOCKED');
  });
});

describe('errors from a running vserverd', () => {
  let server: TestServer;

  before(async () => { server = await TestServer.start(); });
  after(async () => {
    // A VM left on by a failed test would outlive vserverd: turn each off first.
    for (const vm of await server.call<Ref[]>('VirtualServer.get_VirtualMachines')) {
      if (!['Running', 'Paused'].includes(await server.call<string>('VirtualMachine.get_State', { this: vm.$ref }))) continue;
      const task = await server.call<Ref>('VirtualMachine.TurnOff', { this: vm.$ref });
      await server.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 30_000 });
    }
    await server.stop();
    server.remove();
  });

  /** Asserts a JSON-RPC error answer of `name` with the catalogue's HTTP status and code; returns its message. */
  async function assertRefusal(response: Response, name: ErrorName, status = ERRORS[name].http): Promise<string> {
    const body = await response.json() as ErrorBody;
    assert.equal(body.error?.data?.name, name, JSON.stringify(body));
    assert.equal(response.status, status);
    assert.equal(body.jsonrpc, '2.0');
    assert.equal(body.id, null);
    assert.equal(body.error.code, ERRORS[name].rpc);
    return body.error.message;
  }

  const authorized = (): Record<string, string> => ({ authorization: `Bearer ${server.adminToken}` });

  test('a body over 1 MB to /api/rpc is HTTP 413 VM_E_REQUEST_TOO_LARGE', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_Name', params: { padding: 'x'.repeat(1024 * 1024) } });
    const response = await fetch(`${server.url}/api/rpc`, { method: 'POST', headers: { ...authorized(), 'content-type': 'application/json' }, body });
    assert.equal(await assertRefusal(response, 'VM_E_REQUEST_TOO_LARGE'), 'request entity too large');
  });

  test('a sign-in body that is not JSON is HTTP 400 VM_E_BAD_REQUEST; one in a charset the parser cannot read keeps its 415', async () => {
    const broken = await fetch(`${server.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"user": "admin", ' });
    assert.match(await assertRefusal(broken, 'VM_E_BAD_REQUEST'), /JSON/);
    const charset = await fetch(`${server.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json; charset=klingon' }, body: '{}' });
    assert.match(await assertRefusal(charset, 'VM_E_BAD_REQUEST', 415), /charset/);
  });

  test('no caller is HTTP 401 VM_E_NOT_AUTHENTICATED; a session\'s call without its CSRF token is HTTP 403 VM_E_CSRF', async () => {
    const call = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_Name', params: {} });
    await assertRefusal(await fetch(`${server.url}/api/rpc`, { method: 'POST', body: call }), 'VM_E_NOT_AUTHENTICATED');
    const signIn = await fetch(`${server.url}/login`, {
      method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ user: 'admin', password: 'test-admin-password' }).toString(),
    });
    assert.equal(signIn.status, 303);
    const cookie = (signIn.headers.get('set-cookie') ?? '').split(';')[0];
    assert.ok(cookie.includes('='), 'the sign-in set a session cookie');
    await assertRefusal(await fetch(`${server.url}/api/rpc`, { method: 'POST', headers: { cookie }, body: call }), 'VM_E_CSRF');
  });

  test('POST /api/login refusals carry the catalogue\'s status: 400 VM_E_INVALID_PARAMS, 401 VM_E_LOGIN_FAILED', async () => {
    for (const [sent, name] of [[{ user: 'admin' }, 'VM_E_INVALID_PARAMS'], [{ user: 'nobody-here', password: 'wrong' }, 'VM_E_LOGIN_FAILED']] as const) {
      const response = await fetch(`${server.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(sent) });
      const body = await response.json() as { error: { name: string } };
      assert.equal(body.error.name, name);
      assert.equal(response.status, ERRORS[name].http);
    }
  });

  /** Starts the VM and returns the error its Startup task failed with. */
  async function startupError(vm: string): Promise<{ name: string; message: string }> {
    const task = await server.call<Ref>('VirtualMachine.Startup', { this: vm });
    assert.ok(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 30_000 }), 'the Startup task ended');
    const error = await server.call<{ name: string; message: string } | null>('Task.get_Error', { this: task.$ref });
    assert.ok(error, 'the Startup task failed');
    assert.equal(await server.call('VirtualMachine.get_State', { this: vm }), 'TurnedOff', 'and the VM stays off');
    return error;
  }

  async function newVm(name: string): Promise<{ vm: string; folder: string }> {
    const vm = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name })).$ref;
    return { vm, folder: path.dirname(await server.call<string>('VirtualMachine.get_File', { this: vm })) };
  }

  test('Startup of a VM whose DVD image was deleted after it was attached fails with VM_E_MEDIA_NOT_FOUND naming it', async () => {
    const { vm, folder } = await newVm('media-gone');
    const drive = await server.call<Ref>('VirtualMachine.AddDVDROMDrive', { this: vm, busNumber: 1, deviceNumber: 0 });
    const image = path.join(folder, 'gone.iso');
    fs.writeFileSync(image, 'not an image');
    await server.call('DVDROMDrive.AttachImage', { this: drive.$ref, path: image });
    fs.rmSync(image);
    const error = await startupError(vm);
    assert.equal(error.name, 'VM_E_MEDIA_NOT_FOUND');
    assert.ok(error.message.includes(image), error.message);
  });

  test('Startup of a VM whose COM2 file\'s folder was removed fails with VM_E_PORT_FILE naming the file', async () => {
    const { vm } = await newVm('port-folder-gone');
    const ports = path.join(server.dataDir, 'gone-ports');
    fs.mkdirSync(ports);
    await server.call('VirtualMachine.ConfigureSerialPort2', { this: vm, path: 'gone-ports/com2.txt' });
    fs.rmSync(ports, { recursive: true });
    const error = await startupError(vm);
    assert.equal(error.name, 'VM_E_PORT_FILE');
    assert.ok(error.message.includes(path.join(ports, 'com2.txt')), error.message);
  });

  describe('a VM with no disks, running its BIOS', () => {
    let vm: string;
    before(async () => {
      vm = (await newVm('bios-only')).vm;
      await server.call('VirtualMachine.put_Memory', { this: vm, value: 16 });
    });

    test('a Save whose .vsv\'s place is taken by a folder fails with VM_E_SAVE_FAILED (not the worker\'s errno), and the VM keeps running', async () => {
      const task = await server.call<Ref>('VirtualMachine.Startup', { this: vm });
      assert.ok(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 60_000 }), 'the Startup task ended');
      assert.equal(await server.call('Task.get_Error', { this: task.$ref }), null);
      const vsv = await server.call<string>('VirtualMachine.get_SavedStateFilePath', { this: vm });
      fs.mkdirSync(vsv);
      try {
        const save = await server.call<Ref>('VirtualMachine.Save', { this: vm });
        assert.ok(await server.call<boolean>('Task.WaitForCompletion', { this: save.$ref, timeoutMs: 60_000 }), 'the Save task ended');
        const error = await server.call<{ name: string; message: string } | null>('Task.get_Error', { this: save.$ref });
        assert.equal(error?.name, 'VM_E_SAVE_FAILED', JSON.stringify(error));
        assert.match(error!.message, /EISDIR/);
        assert.equal(await server.call('VirtualMachine.get_State', { this: vm }), 'Running');
        assert.deepEqual(fs.readdirSync(path.dirname(vsv)).filter((f) => f.includes('.vsv.')), [], 'the draft state file is removed');
      } finally {
        fs.rmdirSync(vsv);
      }
    });

    test('a Pause sent in the same batch as a Save reaches the worker while it saves: VM_E_BUSY, and the Save completes', async () => {
      assert.equal(await server.call('VirtualMachine.get_State', { this: vm }), 'Running');
      const response = await fetch(`${server.url}/api/rpc`, {
        method: 'POST', headers: { ...authorized(), 'content-type': 'application/json' },
        body: JSON.stringify([{ jsonrpc: '2.0', id: 1, method: 'VirtualMachine.Save', params: { this: vm } }, { jsonrpc: '2.0', id: 2, method: 'VirtualMachine.Pause', params: { this: vm } }]),
      });
      const [save, pause] = (await response.json() as Array<{ id: number; result?: Ref; error?: ErrorBody['error'] }>).sort((a, b) => a.id - b.id);
      assert.equal(pause.error?.data.name, 'VM_E_BUSY', JSON.stringify(pause));
      assert.match(pause.error!.message, /busy \(save in progress\)/);
      assert.ok(save.result, JSON.stringify(save));
      assert.ok(await server.call<boolean>('Task.WaitForCompletion', { this: save.result.$ref, timeoutMs: 60_000 }), 'the Save task ended');
      assert.equal(await server.call('Task.get_Error', { this: save.result.$ref }), null);
      assert.equal(await server.call('VirtualMachine.get_State', { this: vm }), 'Saved');
    });

    test('Startup of the VM whose saved state was overwritten with junk fails with VM_E_RESTORE_FAILED (not the worker\'s errno), and the VM stays Saved with its file', async () => {
      const vsv = await server.call<string>('VirtualMachine.get_SavedStateFilePath', { this: vm });
      const junk = Buffer.alloc(fs.statSync(vsv).size, 0x5a);
      fs.writeFileSync(vsv, junk);
      const task = await server.call<Ref>('VirtualMachine.Startup', { this: vm });
      assert.ok(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 60_000 }), 'the Startup task ended');
      const error = await server.call<{ name: string; message: string } | null>('Task.get_Error', { this: task.$ref });
      assert.equal(error?.name, 'VM_E_RESTORE_FAILED', JSON.stringify(error));
      assert.ok(error!.message.includes(vsv), error!.message);
      assert.equal(await server.call('VirtualMachine.get_State', { this: vm }), 'Saved');
      assert.ok(fs.readFileSync(vsv).equals(junk), 'the saved state file is as it was');
      await server.call('VirtualMachine.DiscardSavedState', { this: vm });
    });

    test('a Shutdown waiting on a guest that ignores the power button, whose worker is killed, fails with VM_E_WORKER_GONE; QEMU goes too', async () => {
      const task = await server.call<Ref>('VirtualMachine.Startup', { this: vm });
      assert.ok(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 60_000 }), 'the Startup task ended');
      assert.equal(await server.call('Task.get_Error', { this: task.$ref }), null);
      const id = vm.slice('VirtualMachine/'.length);
      const { workerPid, qemuPid } = JSON.parse(fs.readFileSync(path.join(server.runDir, id, 'status.json'), 'utf8')) as { workerPid: number; qemuPid: number };
      // The BIOS has no ACPI handler: the worker waits (up to 120 s) for a power-off that does not come.
      const shutdown = await server.call<Ref>('GuestOS.Shutdown', { this: `GuestOS/${id}` });
      await delay(300);
      assert.equal(await server.call('Task.get_IsComplete', { this: shutdown.$ref }), false, 'the Shutdown is still waiting');
      process.kill(workerPid, 'SIGKILL');
      try {
        assert.ok(await server.call<boolean>('Task.WaitForCompletion', { this: shutdown.$ref, timeoutMs: 30_000 }), 'the Shutdown task ended');
        const error = await server.call<{ name: string; message: string } | null>('Task.get_Error', { this: shutdown.$ref });
        assert.equal(error?.name, 'VM_E_WORKER_GONE', JSON.stringify(error));
        await waitFor('QEMU to exit with its worker', () => !isAlive(qemuPid), 10_000);
      } finally {
        if (isAlive(qemuPid)) process.kill(qemuPid, 'SIGKILL');
      }
    });
  });

  test('GetHardDisk of the top of a chain of more differencing disks than the engine follows is VHD_E_CHAIN_TOO_DEEP', async () => {
    const folder = path.join(server.dataDir, 'deep');
    fs.mkdirSync(folder);
    const name = (i: number): string => `c${String(i).padStart(4, '0')}.vhd`;
    await createDynamic(path.join(folder, name(0)), { size: 1024 * 1024 });
    await createDifferencing(path.join(folder, name(1)), path.join(folder, name(0)));
    // Each further level is a copy of the first child, made the child of the level below: its
    // locators and parent name say the lower file's name (the same length), its parent id the
    // lower file's id, and it has an id of its own. Made by createDifferencing, each level
    // would open the whole chain below it.
    const template = fs.readFileSync(path.join(folder, name(1)));
    const headerOffset = decodeFooter(template.subarray(0, FOOTER_SIZE)).dataOffset!;
    let parentId = decodeFooter(template.subarray(0, FOOTER_SIZE)).uniqueId;
    for (let i = 2; i <= MAX_CHAIN_DEPTH; i++) {
      const bytes = Buffer.from(template);
      const header = decodeHeader(bytes.subarray(headerOffset, headerOffset + HEADER_SIZE));
      for (const locator of header.parentLocators.filter((l) => l.platformDataLength > 0)) {
        const area = bytes.subarray(locator.platformDataOffset, locator.platformDataOffset + locator.platformDataLength);
        const text = area.toString('utf16le');
        assert.ok(text.includes(name(0)), `the locator names ${name(0)}: ${text}`);
        area.write(text.replace(name(0), name(i - 1)), 'utf16le');
      }
      header.parentName = name(i - 1);
      header.parentUniqueId = parentId;
      encodeHeader(header).copy(bytes, headerOffset);
      const footer = decodeFooter(bytes.subarray(0, FOOTER_SIZE));
      footer.uniqueId = crypto.randomBytes(16);
      const footerBytes = encodeFooter(footer);
      footerBytes.copy(bytes, 0);
      footerBytes.copy(bytes, bytes.length - FOOTER_SIZE);
      fs.writeFileSync(path.join(folder, name(i)), bytes);
      parentId = footer.uniqueId;
    }
    // c0000 to c0999 are as many disks as the engine follows, and open: the crafted levels are sound.
    const top = name(MAX_CHAIN_DEPTH - 1);
    assert.deepEqual(await server.call('VirtualServer.GetHardDisk', { path: `deep/${top}` }), { $ref: `HardDisk/${path.join(folder, top)}` });
    await rejectsWith(server.call('VirtualServer.GetHardDisk', { path: `deep/${name(MAX_CHAIN_DEPTH)}` }), 'VHD_E_CHAIN_TOO_DEEP', new RegExp(`deeper than ${MAX_CHAIN_DEPTH}`));
  });

  test('GetHardDisk of a differencing disk whose parent locator points past the end of the file is VHD_E_BAD_LOCATOR', async () => {
    const folder = path.join(server.dataDir, 'locators');
    fs.mkdirSync(folder);
    const parent = path.join(folder, 'parent.vhd');
    const child = path.join(folder, 'child.vhd');
    await createDynamic(parent, { size: 16 * 1024 * 1024 });
    await createDifferencing(child, parent);
    // The locator's data offset is moved far past the footer; the header's checksum is made right again.
    const bytes = fs.readFileSync(child);
    const headerOffset = decodeFooter(bytes.subarray(0, FOOTER_SIZE)).dataOffset!;
    const header = decodeHeader(bytes.subarray(headerOffset, headerOffset + HEADER_SIZE));
    const used = header.parentLocators.findIndex((l) => l.platformCode && l.platformDataLength > 0);
    assert.ok(used >= 0, 'the child has a parent locator');
    header.parentLocators[used].platformDataOffset = 2 ** 40;
    const fd = fs.openSync(child, 'r+');
    try {
      fs.writeSync(fd, encodeHeader(header), 0, HEADER_SIZE, headerOffset);
    } finally {
      fs.closeSync(fd);
    }
    const error = await rejectsWith(server.call('VirtualServer.GetHardDisk', { path: 'locators/child.vhd' }), 'VHD_E_BAD_LOCATOR', /parent locator/);
    assert.equal(error.code, ERRORS.VHD_E_BAD_LOCATOR.rpc);
  });
});
