/// <reference lib="dom" />
// The website's Cluster section in a real browser (Debian's chromium, playwright-core) against a
// vserverd in cluster mode on a real etcd (started here, on ports of its own): the menu's Cluster
// link, the hosts table with this host Up and the leader, Maintenance entered and left from the
// page (checked through the API), an empty failover history, and a VM's High availability on its
// Configure page: saved and read back through the API, a bad priority refused beside its field,
// and a VM outside the shared storage refused by name with nothing changed. A vserverd without
// cluster settings has no Cluster link and answers /cluster with 404.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchBrowser, newContext, saveArtifact, signIn } from './helpers/browser.js';
import { EtcdCluster, freePort } from './helpers/etcd.js';
import { ADMIN_PASSWORD, TestServer } from './helpers/server.js';

interface Ref { $ref: string }
interface Ha { enabled: boolean; priority: number; preferredHosts: string[]; maxRestarts: number }

const CLUSTER = 'sitetest';
const HOST = 'site-h1';

let etcd: EtcdCluster;
let server: TestServer;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let shared: string;
let dataDir: string;
const pageErrors: string[] = [];

async function step<T>(name: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    const shot = await page.screenshot({ fullPage: true }).then((b) => saveArtifact(`site-cluster-${name}.png`, b)).catch(() => '(no screenshot)');
    throw new Error(`${name} failed (screenshot ${shot}); page errors: ${pageErrors.join('\n') || 'none'}\nvserverd said: ${server.output.slice(-1500)}`, { cause: error });
  }
}

describe('the Cluster section in a real browser', { timeout: 300_000 }, () => {
  before(async () => {
    etcd = await EtcdCluster.start();
    shared = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-shared-'));
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-'));
    server = await TestServer.start({
      dataDir,
      env: { VSERVER_HOST_NETWORKS: '0' },
      args: ['--storage-root', dataDir, '--storage-root', shared, '--cluster', CLUSTER, '--etcd', etcd.endpoints.join(','),
        '--host-name', HOST, '--host-address', `127.0.0.1:${await freePort()}`, '--shared-storage', shared],
    });
    browser = await launchBrowser();
    context = await newContext(browser, server.url);
    page = await context.newPage();
    // A refused form's page comes back as 400 or 409, which the browser logs: those are expected here.
    page.on('console', (message) => { if (message.type() === 'error' && !/status of (400|409) /.test(message.text())) pageErrors.push(message.text()); });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await signIn(page, 'admin', ADMIN_PASSWORD);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    server?.remove();
    await etcd?.stop();
    if (shared) fs.rmSync(shared, { recursive: true, force: true });
  });

  it('the menu links the Cluster page, which lists this host Up, as leader, and no failovers', () => step('status', async () => {
    await page.getByRole('navigation', { name: 'Main' }).locator('a[href="/cluster"]').click();
    await page.getByRole('heading', { name: `Cluster ${CLUSTER}` }).waitFor();
    const row = page.locator(`tr[data-host="${HOST}"]`);
    assert.equal(await row.getAttribute('data-state'), 'Up');
    assert.match(await row.locator('th').textContent() ?? '', /\(this host\)/);
    // The leader is elected shortly after the start: the page says so once it is.
    const deadline = Date.now() + 20_000;
    while ((await page.locator('#cluster-leader').textContent())?.trim() !== HOST) {
      assert.ok(Date.now() < deadline, `no leader on the page after 20 s: ${await page.locator('#cluster-leader').textContent()}`);
      await new Promise((r) => setTimeout(r, 500));
      await page.reload();
    }
    await page.locator('#no-failovers').waitFor();
    assert.equal(await page.locator('table.failovers').count(), 0);
  }));

  it('Enter Maintenance and Exit Maintenance change the host\'s state, as the API reads it', () => step('maintenance', async () => {
    await page.goto('/cluster');
    await page.locator(`tr[data-host="${HOST}"] [data-action="maintenance-on"]`).click();
    await page.getByRole('status').filter({ hasText: `${HOST} is in Maintenance` }).waitFor();
    assert.equal(await page.locator(`tr[data-host="${HOST}"]`).getAttribute('data-state'), 'Maintenance');
    assert.equal(await server.call('Host.get_State', { this: `Host/${HOST}` }), 'Maintenance');
    await page.locator(`tr[data-host="${HOST}"] [data-action="maintenance-off"]`).click();
    await page.getByRole('status').filter({ hasText: `${HOST} left Maintenance` }).waitFor();
    assert.equal(await server.call('Host.get_State', { this: `Host/${HOST}` }), 'Up');
  }));

  it('a VM on shared storage: High availability is saved from its Configure page; a bad priority is refused beside its field', () => step('ha', async () => {
    const vm = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'site-ha', path: path.join(shared, 'site-ha') })).$ref;
    const id = vm.split('/')[1];
    await page.goto(`/vms/${id}`);
    await page.getByRole('heading', { name: 'High availability' }).waitFor();
    assert.equal(await page.getByLabel('Restart it on another host when its host fails').isChecked(), false);
    await page.getByLabel('Restart it on another host when its host fails').check();
    await page.getByLabel('Priority').fill('80');
    await page.getByLabel('Preferred hosts').fill(HOST);
    await page.getByLabel('Restarts on the same host').fill('2');
    await page.locator('#section-ha').getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'high availability settings were saved' }).waitFor();
    const saved = await server.call<Ha>('VirtualMachine.get_HighAvailability', { this: vm });
    assert.deepEqual(saved, { enabled: true, priority: 80, preferredHosts: [HOST], maxRestarts: 2 });

    await page.getByLabel('Priority').fill('200');
    await page.locator('#section-ha').getByRole('button', { name: 'Save' }).click();
    const error = page.locator('#ha-priority-error');
    await error.waitFor();
    assert.match(await error.textContent() ?? '', /100/);
    assert.equal(await page.getByLabel('Priority').inputValue(), '200', 'what was typed is kept');
    assert.deepEqual(await server.call<Ha>('VirtualMachine.get_HighAvailability', { this: vm }), saved, 'nothing changed');
  }));

  it('a VM outside the shared storage: enabling High availability is refused by name and it stays off', () => step('ha-local', async () => {
    const vm = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'site-local', path: path.join(dataDir, 'site-local') })).$ref;
    await page.goto(`/vms/${vm.split('/')[1]}`);
    await page.getByLabel('Restart it on another host when its host fails').check();
    await page.locator('#section-ha').getByRole('button', { name: 'Save' }).click();
    const error = page.locator('#ha-enabled-error');
    await error.waitFor();
    assert.match(await error.textContent() ?? '', /VM_E_NOT_SHARED_STORAGE|shared storage/);
    assert.equal((await server.call<Ha>('VirtualMachine.get_HighAvailability', { this: vm })).enabled, false);
  }));
});

describe('the website of a vserverd without cluster settings', { timeout: 120_000 }, () => {
  let alone: TestServer;
  let alonePage: Page;
  let aloneBrowser: Browser;
  before(async () => {
    alone = await TestServer.start({ env: { VSERVER_HOST_NETWORKS: '0' } });
    aloneBrowser = await launchBrowser();
    alonePage = await (await newContext(aloneBrowser, alone.url)).newPage();
    await signIn(alonePage, 'admin', ADMIN_PASSWORD);
  });
  after(async () => {
    await aloneBrowser?.close();
    await alone?.stop();
    alone?.remove();
  });

  it('has no Cluster link, /cluster answers 404 saying why, and a VM\'s page has no High availability section', async () => {
    assert.equal(await alonePage.getByRole('navigation', { name: 'Main' }).locator('a[href="/cluster"]').count(), 0);
    const answer = await alonePage.goto('/cluster');
    assert.equal(answer?.status(), 404);
    assert.match(await alonePage.content(), /without cluster settings/);
    const vm = (await alone.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'alone' })).$ref;
    await alonePage.goto(`/vms/${vm.split('/')[1]}`);
    await alonePage.getByRole('heading', { name: 'General properties' }).waitFor();
    assert.equal(await alonePage.locator('#section-ha').count(), 0);
  });
});
