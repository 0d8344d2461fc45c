/// <reference lib="dom" />
// Undo disks and snapshots on the website, in a real browser (Debian's chromium through
// playwright-core) against a real vserverd running the real test guest (128 MB). The Undo disks
// check box and the undo action persist; the VM, turned on from Master Status, writes to its
// undo disk (shown in its disk's row); Turn Off asks what becomes of the undo disks, proposing
// the VM's undo action, and the choice reaches TurnOff: Discard leaves the data disk's file
// byte for byte as it was and the undo disk gone; Keep (proposed from Master Status) keeps it,
// and Merge undo disks writes it into the data disk (qemu-img compare sees the change). Then,
// from the Snapshots page of the turned-off VM: a snapshot taken with its task's progress, shown
// in the tree as the current one; a clashing name refused beside the field with the API's
// message; undo disks refused beside their check box while snapshots exist; the description
// edited; Revert asking first and then reverting; Delete with its task.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { isAlive, processesMentioning } from '../host/process.js';
import { VmPaths } from '../vmm/paths.js';
import { GUEST_BOOT_MS, GuestConsole, type Ref } from './helpers/api-guests.js';
import { launchBrowser, newContext, policyViolations, saveArtifact, signIn } from './helpers/browser.js';
import { GUEST_PROMPT, GUEST_READY_MARKER } from './helpers/guest.js';
import { DATA_SLOT, type LayerGuest, createLayerGuest } from './helpers/layer-guests.js';
import { ADMIN_PASSWORD, TestServer, refusal } from './helpers/server.js';
import { SerialReader } from './helpers/vm.js';

const STATE_MS = 90_000;

let server: TestServer;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let vm: LayerGuest;
let guest: GuestConsole | null = null;
/** What the admin's pages logged as errors, shown when a step fails. */
const pageErrors: string[] = [];

const call = <T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> => server.call<T>(method, params);
const state = (): Promise<string> => call<string>('VirtualMachine.get_State', { this: vm.ref });
const sha256 = (file: string): string => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const undoDiskOf = (slot: string): Promise<string | null> => call<string | null>('HardDiskConnection.get_UndoHardDisk', { this: `HardDiskConnection/${vm.id}/${slot}` });

/** `qemu-img compare` of two VHDs: 0 identical, 1 different (anything else fails the test). */
function qemuCompare(a: string, b: string): number {
  const r = spawnSync('qemu-img', ['compare', '-U', '-f', 'vpc', '-F', 'vpc', a, b], { encoding: 'utf8' });
  assert.ok(r.status === 0 || r.status === 1, `qemu-img compare ${a} ${b} exited ${r.status}: ${r.stdout}${r.stderr}`);
  return r.status;
}

/** Waits for the task page the browser is on to finish, and asserts it said done. */
/** Turns the VM on with Master Status' button; resolves with its console once the guest's shell prompts. */
async function turnOnFromMasterStatus(): Promise<GuestConsole> {
  await page.goto('/');
  await page.locator(`tr.vm-row[data-vm="${vm.id}"] button[data-action="turnOn"]`).click();
  await page.locator(`tr.vm-row[data-vm="${vm.id}"][data-state="Running"]`).waitFor({ timeout: STATE_MS });
  const serial = await SerialReader.attach(VmPaths.of(vm.id, server.runDir).console);
  const opened = new GuestConsole(vm, serial);
  const ready = await serial.waitFor(GUEST_READY_MARKER, GUEST_BOOT_MS);
  await serial.waitFor(GUEST_PROMPT, GUEST_BOOT_MS, ready);
  return opened;
}

async function taskDone(): Promise<void> {
  await page.waitForURL('**/tasks/*');
  try {
    await page.locator('#task[data-complete="true"]').waitFor({ timeout: STATE_MS });
  } catch (error) {
    throw new Error(`the task page did not finish: ${await page.locator('#task-status').innerText().catch(() => '?')}; the page's errors: ${pageErrors.join('\n') || 'none'}`, { cause: error });
  }
  assert.equal(await page.locator('#task-status').innerText(), 'done');
  assert.equal(await page.locator('#task-progress').getAttribute('value'), '100');
}

/** The message beside a form field on the current page. */
function fieldError(field: string): Promise<string> {
  return page.locator(`#${field}-error`).innerText();
}

describe('undo disks and snapshots on the website, in a real browser with a real guest', { timeout: 900_000 }, () => {
  before(async () => {
    server = await TestServer.start();
    vm = await createLayerGuest(server, 'site-layers', 16);
    browser = await launchBrowser();
    context = await newContext(browser, server.url);
    page = await context.newPage();
    page.on('console', (message) => { if (message.type() === 'error') pageErrors.push(message.text()); });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await signIn(page, 'admin', ADMIN_PASSWORD);
  });

  after(async () => {
    guest?.close();
    await browser?.close();
    if (server) {
      try {
        if (['Running', 'Paused'].includes(await state())) await call('VirtualMachine.TurnOff', { this: vm.ref });
      } catch {
        // killed below
      }
      await server.stop();
      for (const pid of processesMentioning(server.runDir).filter(isAlive)) process.kill(pid, 'SIGKILL');
      server.remove();
    }
  });

  it('saves the Undo disks check box and the undo action, and shows them again', async () => {
    await page.goto(`/vms/${vm.id}`);
    const form = page.locator('#undo-form');
    assert.equal(await form.getByLabel('Enable undo disks').isChecked(), false);
    await form.getByLabel('Enable undo disks').check();
    await form.getByLabel('When the VM is turned off').selectOption('Keep');
    await form.getByRole('button', { name: 'Save' }).click();
    await page.waitForURL((url) => url.searchParams.get('saved') === 'undo');
    assert.match(await page.locator('.saved').innerText(), /undo disk settings were saved/);
    assert.equal(await call('VirtualMachine.get_Undoable', { this: vm.ref }), true);
    assert.equal(await call('VirtualMachine.get_UndoAction', { this: vm.ref }), 'Keep');

    await page.reload();
    assert.equal(await page.locator('#undoable').isChecked(), true, 'the check box shows the saved value');
    assert.equal(await page.locator('#undo-action').inputValue(), 'Keep');
    assert.equal(await page.locator(`tr[data-connection="${DATA_SLOT}"] td.undo-disk`).innerText(), 'none', 'no undo disk before the VM is turned on');
  });

  it('turns the VM on from Master Status; it writes to its undo disk, which its disk\'s row shows', async () => {
    const base = path.join(path.dirname(vm.dataDisk), 'data-before.vhd');
    fs.copyFileSync(vm.dataDisk, base);
    guest = await turnOnFromMasterStatus();

    const undo = await undoDiskOf(DATA_SLOT);
    assert.equal(undo, path.join(vm.folder, `${vm.name}_${DATA_SLOT}.vud`));
    assert.ok(fs.existsSync(undo));
    const empty = fs.statSync(undo).size;
    const said = await guest.run('dd if=/dev/urandom of=/dev/sdb bs=65536 count=16 && sync && echo WROTE-OK');
    assert.match(said, /WROTE-OK/, `the guest wrote its data disk: ${said}`);
    assert.ok(fs.statSync(undo).size >= empty + 1024 * 1024, `the guest's megabyte went to the undo disk (${empty} -> ${fs.statSync(undo).size} bytes)`);
    assert.equal(sha256(vm.dataDisk), sha256(base), 'the data disk itself is not written while undo disks are on');

    // The Turn Off of an undoable VM is a link to the page that asks, not a button that acts at once.
    const turnOff = page.locator(`tr.vm-row[data-vm="${vm.id}"] [data-action="turnOff"]`);
    assert.equal(await turnOff.evaluate((e) => e.tagName), 'A');
    await page.goto(`/vms/${vm.id}`);
    assert.equal(await page.locator(`tr[data-connection="${DATA_SLOT}"] td.undo-disk`).innerText(), undo);
    assert.equal(await page.locator('#undoable').isDisabled(), true, 'undo disks can be turned off only while the VM is off');
  });

  it('Turn Off asks what becomes of the undo disks, proposes the VM\'s undo action, and Discard reaches the API', async () => {
    const undo = (await undoDiskOf(DATA_SLOT))!;
    const base = path.join(path.dirname(vm.dataDisk), 'data-before.vhd');
    // From the VM's page: its Turn Off link opens the choice.
    await page.locator('#turn-off-link').click();
    await page.waitForURL(`**/vms/${vm.id}/turn-off**`);
    assert.equal(await page.getByLabel(/^Keep the undo disks/).isChecked(), true, 'the VM\'s undo action (Keep) is proposed');
    saveArtifact('site-turn-off.png', await page.screenshot({ fullPage: true }));
    await page.getByLabel(/^Discard the undo disks/).check();
    await page.getByRole('button', { name: 'Turn Off' }).click();
    await taskDone();
    assert.match(await page.locator('#task-outcome').innerText(), /discarded the undo disks/);
    assert.equal(await page.locator('#task-back').innerText(), 'Back to the configuration');
    assert.equal(await state(), 'TurnedOff');

    assert.equal(fs.existsSync(undo), false, 'Discard, not the VM\'s Keep, was applied: the undo disk is gone');
    assert.equal(await undoDiskOf(DATA_SLOT), null);
    assert.equal(sha256(vm.dataDisk), sha256(base), 'the data disk is byte for byte as before');
    assert.equal(qemuCompare(base, vm.dataDisk), 0);
    guest?.close();
    guest = null;
  });

  it('Turn Off from Master Status with Keep keeps the undo disk; Merge undo disks writes it into the data disk', async () => {
    const base = path.join(path.dirname(vm.dataDisk), 'data-before.vhd');
    guest = await turnOnFromMasterStatus();
    const said = await guest.run('dd if=/dev/urandom of=/dev/sdb bs=65536 count=16 && sync && echo WROTE-OK');
    assert.match(said, /WROTE-OK/);

    await page.locator(`tr.vm-row[data-vm="${vm.id}"] [data-action="turnOff"]`).click();
    await page.waitForURL(`**/vms/${vm.id}/turn-off`);
    await page.getByRole('button', { name: 'Turn Off' }).click();
    await taskDone();
    assert.match(await page.locator('#task-outcome').innerText(), /kept the undo disks/);
    assert.equal(await page.locator('#task-back').innerText(), 'Back');
    guest.close();
    guest = null;
    const undo = await undoDiskOf(DATA_SLOT);
    assert.ok(undo && fs.existsSync(undo), 'Keep, proposed from the VM\'s undo action, kept the undo disk');
    assert.equal(sha256(vm.dataDisk), sha256(base));

    await page.goto(`/vms/${vm.id}`);
    assert.equal(await page.locator(`tr[data-connection="${DATA_SLOT}"] td.undo-disk`).innerText(), undo);
    saveArtifact('site-undo-disks.png', await page.locator('#section-disks').screenshot());
    await page.getByRole('button', { name: 'Merge undo disks' }).click();
    await taskDone();
    assert.match(await page.locator('#task-outcome').innerText(), /committed the undo disks/);
    assert.equal(fs.existsSync(undo), false, 'the merged undo disk is gone');
    assert.equal(await undoDiskOf(DATA_SLOT), null);
    assert.equal(qemuCompare(base, vm.dataDisk), 1, 'the guest\'s writes are now in the data disk');
    await page.locator('#task-back').click();
    await page.waitForURL(`**/vms/${vm.id}**`);
    assert.equal(await page.getByRole('button', { name: 'Merge undo disks' }).count(), 0, 'no undo disks left to merge');
  });

  it('a turned-off VM\'s undo disks can be turned off from the page; then snapshots are allowed', async () => {
    await page.goto(`/vms/${vm.id}`);
    await page.locator('#undoable').uncheck();
    await page.locator('#undo-form').getByRole('button', { name: 'Save' }).click();
    await page.waitForURL((url) => url.searchParams.has('saved'));
    assert.equal(await call('VirtualMachine.get_Undoable', { this: vm.ref }), false);
    assert.equal(await page.locator('#undoable').isChecked(), false);
  });

  it('takes a snapshot from the Snapshots page, with its task\'s progress, and shows it in the tree as current', async () => {
    await page.locator('#snapshots-link').click();
    await page.waitForURL(`**/vms/${vm.id}/snapshots`);
    await page.locator('#no-snapshots').waitFor();
    await page.getByLabel('Name', { exact: true }).fill('first');
    await page.getByLabel('Description', { exact: true }).fill('before the change');
    await page.getByRole('button', { name: 'Take snapshot' }).click();
    await taskDone();
    await page.getByRole('link', { name: 'Show the snapshots' }).click();
    await page.waitForURL(`**/vms/${vm.id}/snapshots`);

    const current = await call<Ref | null>('VirtualMachine.get_CurrentSnapshot', { this: vm.ref });
    assert.ok(current, 'the VM has a current snapshot');
    const id = current.$ref.split('/').at(-1)!;
    const row = page.locator(`tr[data-snapshot="${id}"]`);
    assert.match(await row.locator('th').innerText(), /^first \(current\)$/);
    assert.equal(await row.getAttribute('aria-current'), 'true');
    assert.equal(await row.locator('td').nth(1).innerText(), 'no', 'no memory in a turned-off VM\'s snapshot');
    assert.equal(await row.locator('td').nth(2).innerText(), 'crash-consistent');
    assert.equal(await page.locator(`#description-${id}`).inputValue(), 'before the change');
    assert.equal(await call('Snapshot.get_Name', { this: current.$ref }), 'first');
  });

  it('refuses a clashing name beside the Name field with the API\'s message, keeping what was typed', async () => {
    await page.getByLabel('Name', { exact: true }).fill('FIRST');
    await page.getByLabel('Description', { exact: true }).fill('kept');
    const answer = page.waitForResponse((r) => r.url().endsWith('/snapshots/create'));
    await page.getByRole('button', { name: 'Take snapshot' }).click();
    assert.equal((await answer).status(), 400);
    const api = await refusal(call('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'FIRST' }));
    assert.equal(await fieldError('snapshot-name'), api.message);
    assert.match(api.message, /FIRST|first/);
    assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'FIRST');
    assert.equal(await page.getByLabel('Description', { exact: true }).inputValue(), 'kept');
    assert.equal((await call<unknown[]>('VirtualMachine.get_Snapshots', { this: vm.ref })).length, 1, 'no second snapshot');
  });

  it('refuses undo disks beside the check box while the VM has snapshots, and changes nothing', async () => {
    await page.goto(`/vms/${vm.id}`);
    await page.locator('#undoable').check();
    const answer = page.waitForResponse((r) => r.url().includes(`/vms/${vm.id}/undo`));
    await page.locator('#undo-form').getByRole('button', { name: 'Save' }).click();
    assert.equal((await answer).status(), 409);
    const api = await refusal(call('VirtualMachine.put_Undoable', { this: vm.ref, value: true }));
    assert.equal(api.data.name, 'VM_E_UNDO_AND_SNAPSHOTS');
    assert.equal(await fieldError('undoable'), api.message);
    assert.equal(await page.locator('#undoable').isChecked(), true, 'the box stays as it was sent');
    assert.equal(await call('VirtualMachine.get_Undoable', { this: vm.ref }), false);
  });

  it('edits a snapshot\'s description', async () => {
    await page.goto(`/vms/${vm.id}/snapshots`);
    const current = (await call<Ref>('VirtualMachine.get_CurrentSnapshot', { this: vm.ref })).$ref;
    const id = current.split('/').at(-1)!;
    await page.locator(`#description-${id}`).fill('kernel 6.1');
    await page.getByRole('button', { name: 'Save the description of first' }).click();
    await page.waitForURL((url) => url.searchParams.get('saved') === 'description');
    assert.equal(await call('Snapshot.get_Description', { this: current }), 'kernel 6.1');
    saveArtifact('site-snapshots-tree.png', await page.screenshot({ fullPage: true }));
    assert.equal(await page.locator(`#description-${id}`).inputValue(), 'kernel 6.1');
  });

  it('Revert asks first, saying the current state is lost; without confirm the API refuses; with it the VM reverts', async () => {
    // A second snapshot, so that reverting to the first changes which one is current.
    await page.getByLabel('Name', { exact: true }).fill('second');
    await page.getByRole('button', { name: 'Take snapshot' }).click();
    await taskDone();
    const second = (await call<Ref>('VirtualMachine.get_CurrentSnapshot', { this: vm.ref })).$ref;
    const tree = await call<Array<{ snapshot: Ref; name: string }>>('VirtualMachine.get_Snapshots', { this: vm.ref });
    const first = tree.find((s) => s.name === 'first')!.snapshot.$ref;
    const firstId = first.split('/').at(-1)!;

    await page.goto(`/vms/${vm.id}/snapshots`);
    await page.getByRole('link', { name: 'Revert to first' }).click();
    await page.waitForURL(`**/snapshots/${firstId}/revert`);
    assert.match(await page.locator('#revert-warning').innerText(), /loses the current state of site-layers/);
    assert.equal((await call<Ref>('VirtualMachine.get_CurrentSnapshot', { this: vm.ref })).$ref, second, 'nothing happens before the confirmation');

    // The form sent without its confirm (as a script might): the API's refusal, beside the button.
    const refused = await page.evaluate(async (action) => {
      const csrf = document.querySelector('meta[name="csrf-token"]')!.getAttribute('content')!;
      const response = await fetch(action, { method: 'POST', body: new URLSearchParams({ _csrf: csrf }), headers: { Accept: 'application/json' } });
      return { status: response.status, body: await response.json() as { error: { fields: Record<string, string> } } };
    }, `/vms/${vm.id}/snapshots/${firstId}/revert`);
    assert.equal(refused.status, 400);
    assert.match(refused.body.error.fields.revert, /confirm=true/);

    await page.getByRole('button', { name: 'Revert, losing the current state' }).click();
    await taskDone();
    assert.equal((await call<Ref>('VirtualMachine.get_CurrentSnapshot', { this: vm.ref })).$ref, first);
    await page.locator('#task-back').click();
    await page.waitForURL(`**/vms/${vm.id}/snapshots`);
    assert.match(await page.locator(`tr[data-snapshot="${firstId}"] th`).innerText(), /\(current\)/);
  });

  it('deletes snapshots with their tasks\' progress, and the tree empties', async () => {
    for (const name of ['second', 'first']) {
      await page.getByRole('button', { name: `Delete ${name}` }).click();
      await taskDone();
      await page.locator('#task-back').click();
      await page.waitForURL(`**/vms/${vm.id}/snapshots`);
      assert.equal(await page.locator('tr[data-snapshot] th', { hasText: name }).count(), 0, `${name} is gone from the tree`);
    }
    await page.locator('#no-snapshots').waitFor();
    assert.deepEqual(await call('VirtualMachine.get_Snapshots', { this: vm.ref }), []);
    assert.equal(await call('VirtualMachine.get_CurrentSnapshot', { this: vm.ref }), null);
  });

  it('a running VM: a snapshot with its memory from the page, Revert resumes it running, Delete merges while it runs', async () => {
    guest = await turnOnFromMasterStatus();

    await page.locator(`tr.vm-row[data-vm="${vm.id}"] [data-action="snapshots"]`).click();
    await page.waitForURL(`**/vms/${vm.id}/snapshots`);
    await page.getByLabel('Name', { exact: true }).fill('running');
    await page.getByLabel('Include the memory').check();
    await page.getByRole('button', { name: 'Take snapshot' }).click();
    await taskDone();
    assert.equal(await state(), 'Running', 'the guest runs on after the snapshot');
    await page.getByRole('link', { name: 'Show the snapshots' }).click();
    const snapshot = (await call<Ref>('VirtualMachine.get_CurrentSnapshot', { this: vm.ref })).$ref;
    const id = snapshot.split('/').at(-1)!;
    const method = await call<string>('Snapshot.get_MemoryMethod', { this: snapshot });
    assert.equal(await page.locator(`tr[data-snapshot="${id}"] td`).nth(1).innerText(), `yes (${method})`);
    saveArtifact('site-snapshots.png', await page.screenshot({ fullPage: true }));

    await page.getByRole('link', { name: 'Revert to running' }).click();
    assert.match(await page.locator('#revert-warning').innerText(), /its running state \(it is turned off first\)/);
    await page.getByRole('button', { name: 'Revert, losing the current state' }).click();
    await taskDone();
    assert.equal(await state(), 'Running', 'a snapshot with memory resumes the VM running');
    guest.close();
    guest = null;

    await page.locator('#task-back').click();
    await page.getByRole('button', { name: 'Delete running' }).click();
    await taskDone();
    assert.deepEqual(await call('VirtualMachine.get_Snapshots', { this: vm.ref }), []);
    assert.equal(await state(), 'Running');
  });

  it('no page broke its content policy or logged an error (besides the refusals asked for above)', () => {
    assert.deepEqual(policyViolations(), []);
    assert.deepEqual(pageErrors.filter((e) => !/status of (400|409)/.test(e)), []);
  });
});
