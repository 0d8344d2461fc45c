/// <reference lib="dom" />
// The website's Virtual Networks section in a real browser (Debian's chromium, playwright-core)
// against a real vserverd without host network parts: a network is created from the menu,
// its DHCP server configured (a refused mask shows the named error beside the field and changes
// nothing), it is listed, picked for a VM's adapter on the VM's page, connected and disconnected
// from its own page, refused removal while an adapter is attached (naming it), and removed after.
// Every outcome is checked through the API as well as on the page.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchBrowser, newContext, policyViolations, saveArtifact, signIn } from './helpers/browser.js';
import { historyChart } from '../server/site/history-chart.js';
import { ADMIN_PASSWORD, TestServer } from './helpers/server.js';

interface Ref { $ref: string }

let server: TestServer;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let networkId = '';
let vmId = '';
let adapterRef = '';
const pageErrors: string[] = [];

const networkRef = (): string => `VirtualNetwork/${networkId}`;

/** The DHCP server's settings as the API reads them. */
async function dhcpSettings(): Promise<Record<string, unknown>> {
  const dhcp = await server.call<Ref>('VirtualNetwork.get_DHCPVirtualNetworkServer', { this: networkRef() });
  const members = ['get_IsEnabled', 'get_NetworkAddress', 'get_NetworkMask', 'get_StartingIPAddress', 'get_EndingIPAddress', 'get_ServerIPAddress',
    'get_DefaultGatewayAddress', 'get_DNSServers', 'get_WINSServers', 'get_LeaseTime', 'get_RenewalTime', 'get_RebindingTime'];
  return Object.fromEntries(await Promise.all(members.map(async (m) => [m, await server.call(`DHCPVirtualNetworkServer.${m}`, { this: dhcp.$ref })])));
}

/** Runs a step; on failure keeps a screenshot and says what the page and vserverd said. */
async function step<T>(name: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    const shot = await page.screenshot({ fullPage: true }).then((b) => saveArtifact(`site-networks-${name}.png`, b)).catch(() => '(no screenshot)');
    throw new Error(`${name} failed (screenshot ${shot}); page errors: ${pageErrors.join('\n') || 'none'}\nvserverd said: ${server.output.slice(-1500)}`, { cause: error });
  }
}

describe('Virtual Networks in a real browser', { timeout: 300_000 }, () => {
  before(async () => {
    // No host parts (bridges, TAPs, dnsmasq): these tests touch no network of the machine.
    server = await TestServer.start({ env: { VSERVER_HOST_NETWORKS: '0' } });
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
    if (server) {
      await server.stop();
      server.remove();
    }
  });

  it('the menu has a Virtual Networks section: Create, Add, Configure', async () => {
    const nav = page.getByRole('navigation', { name: 'Main' });
    await nav.getByRole('heading', { name: 'Virtual Networks' }).waitFor();
    for (const [label, href] of [['Create', '/networks/create'], ['Add', '/networks/add'], ['Configure', '/networks']]) {
      assert.equal(await nav.locator(`a[href="${href}"]`).textContent(), label);
    }
  });

  it('creates an internal network from the Create form, and opens its page', () => step('create', async () => {
    await page.getByRole('navigation', { name: 'Main' }).locator('a[href="/networks/create"]').click();
    await page.getByRole('heading', { name: 'Create Virtual Network' }).waitFor();
    // The host adapter choices come from HostInfo: at least "None (Guest Only)", plus the host's interfaces.
    const interfaces = (await server.call<{ networkInterfaces: Array<{ name: string }> }>('VirtualServer.get_HostInfo')).networkInterfaces;
    assert.deepEqual(await page.locator('#host-adapter option').evaluateAll((options) => options.map((o) => (o as HTMLOptionElement).value)), ['', ...interfaces.map((i) => i.name)]);
    assert.equal(await page.locator('#host-adapter option').first().textContent(), 'None (Guest Only)');
    await page.getByLabel('Name').fill('lab');
    await page.getByLabel(/^Internal/).check();
    await page.getByLabel('Notes').fill('made by the browser test');
    await page.getByRole('button', { name: 'Create' }).click();
    await page.waitForURL(/\/networks\/[0-9a-f-]{36}$/);
    networkId = /\/networks\/([0-9a-f-]{36})$/.exec(page.url())![1];
    await page.getByRole('heading', { name: 'Configure lab' }).waitFor();
    const found = await server.call<Ref | null>('VirtualServer.FindVirtualNetwork', { name: 'lab' });
    assert.equal(found?.$ref, networkRef());
    assert.equal(await server.call('VirtualNetwork.get_Kind', { this: networkRef() }), 'internal');
    assert.equal(await server.call('VirtualNetwork.get_Notes', { this: networkRef() }), 'made by the browser test');
  }));

  it('a name in use is refused beside the name, and nothing is made', () => step('create-taken', async () => {
    const before = await server.call<Ref[]>('VirtualServer.get_VirtualNetworks');
    await page.goto('/networks/create');
    await page.getByLabel('Name').fill('lab');
    await page.getByLabel(/^NAT/).check();
    await page.getByRole('button', { name: 'Create' }).click();
    await page.locator('#name-error').waitFor();
    assert.match(await page.locator('#form-error').textContent() ?? '', /\[VM_E_NETWORK_NAME_IN_USE\]/);
    assert.equal((await server.call<Ref[]>('VirtualServer.get_VirtualNetworks')).length, before.length);
  }));

  it('a DHCP mask that is not contiguous shows VM_E_DHCP_INVALID beside the mask and changes nothing', () => step('dhcp-bad-mask', async () => {
    const before = await dhcpSettings();
    await page.goto(`/networks/${networkId}`);
    await page.getByLabel('Network mask').fill('255.0.255.0');
    await page.getByLabel('Starting IP address').fill(String(before.get_StartingIPAddress).replace(/\d+$/, '40'));
    await page.locator('#dhcp-form').getByRole('button', { name: 'Save' }).click();
    await page.locator('#dhcp-refused').waitFor();
    assert.match(await page.locator('#dhcp-refused').textContent() ?? '', /\[VM_E_DHCP_INVALID\]/);
    assert.ok((await page.locator('#dhcp-mask-error').textContent() ?? '').length > 0, 'a message beside the mask');
    // The page keeps what was typed, so it can be corrected.
    assert.equal(await page.getByLabel('Network mask').inputValue(), '255.0.255.0');
    assert.deepEqual(await dhcpSettings(), before);
  }));

  it('configures the DHCP server: every option and the lease times, as the API reads them afterwards', () => step('dhcp', async () => {
    await page.goto(`/networks/${networkId}`);
    const values: Record<string, string> = {
      'Network address': '10.98.0.0', 'Network mask': '255.255.255.0', 'Starting IP address': '10.98.0.10', 'Ending IP address': '10.98.0.50',
      'DHCP server address': '10.98.0.1', 'Default gateway': '10.98.0.1', 'DNS servers': '10.98.0.1, 10.98.0.2', 'WINS servers': '',
      'Lease time (seconds)': '7200', 'Renewal time (seconds)': '3600', 'Rebinding time (seconds)': '6300',
    };
    for (const [label, value] of Object.entries(values)) await page.getByLabel(label, { exact: true }).fill(value);
    await page.locator('#dhcp-form').getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'The DHCP server\'s settings were saved.' }).waitFor();
    const after = await dhcpSettings();
    assert.deepEqual(
      [after.get_NetworkAddress, after.get_NetworkMask, after.get_StartingIPAddress, after.get_EndingIPAddress, after.get_ServerIPAddress, after.get_DefaultGatewayAddress, after.get_DNSServers, after.get_WINSServers, after.get_LeaseTime, after.get_RenewalTime, after.get_RebindingTime],
      ['10.98.0.0', '255.255.255.0', '10.98.0.10', '10.98.0.50', '10.98.0.1', '10.98.0.1', ['10.98.0.1', '10.98.0.2'], [], 7200, 3600, 6300]);
    assert.equal(await page.getByLabel('Ending IP address').inputValue(), '10.98.0.50');
    // The counters, drawn as charts on the server: two SVGs with their titles.
    assert.equal(await page.locator('#section-counters svg.history-chart').count(), 2);
    assert.match(await page.locator('#section-counters svg.history-chart title').first().textContent() ?? '', /^Bytes per 5 seconds: Sent/);
  }));

  it('the settings form renames the network and sets its notes; an empty name is refused beside the field', () => step('general', async () => {
    await page.goto(`/networks/${networkId}`);
    await page.locator('#general-name').fill('');
    await page.locator('#section-general').getByRole('button', { name: 'Save' }).click();
    await page.locator('#general-name-error').waitFor();
    assert.equal(await server.call('VirtualNetwork.get_Name', { this: networkRef() }), 'lab');
    await page.locator('#general-name').fill('bench');
    await page.locator('#general-notes').fill('renamed');
    await page.locator('#section-general').getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'The network\'s settings were saved.' }).waitFor();
    assert.equal(await server.call('VirtualNetwork.get_Name', { this: networkRef() }), 'bench');
    assert.equal(await server.call('VirtualNetwork.get_Notes', { this: networkRef() }), 'renamed');
    await page.getByRole('heading', { name: 'Configure bench' }).waitFor();
    await page.locator('#general-name').fill('lab');
    await page.locator('#section-general').getByRole('button', { name: 'Save' }).click();
    await page.getByRole('heading', { name: 'Configure lab' }).waitFor();
    assert.equal(await server.call('VirtualNetwork.get_Name', { this: networkRef() }), 'lab');
  }));

  it('View All lists the network with its kind, host adapter and DHCP server', () => step('list', async () => {
    await page.getByRole('navigation', { name: 'Main' }).locator('a[href="/networks"]').click();
    await page.getByRole('heading', { level: 1, name: 'Virtual Networks' }).waitFor();
    const row = page.locator(`tr[data-network="${networkId}"]`);
    assert.deepEqual((await row.locator('th, td').allTextContents()).map((t) => t.trim()), ['lab', 'internal', 'None (Guest Only)', 'Disabled', '0']);
    await row.getByRole('link', { name: 'lab' }).click();
    await page.getByRole('heading', { name: 'Configure lab' }).waitFor();
  }));

  it('picks the network for a VM\'s adapter on the VM\'s page', () => step('pick', async () => {
    const vm = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'netvm' });
    vmId = vm.$ref.slice('VirtualMachine/'.length);
    adapterRef = (await server.call<Ref>('VirtualMachine.AddNetworkAdapter', { this: vm.$ref })).$ref;
    await page.goto(`/vms/${vmId}`);
    const picker = page.getByLabel('Network of adapter 1', { exact: true });
    assert.deepEqual(await picker.locator('option').allTextContents(), ['Not connected', 'Internal Network', 'lab']);
    assert.equal(await picker.inputValue(), '');
    await picker.selectOption({ label: 'lab' });
    await page.getByRole('button', { name: 'Apply the network of adapter 1' }).click();
    await page.getByRole('status').filter({ hasText: 'The network adapters were changed.' }).waitFor();
    assert.deepEqual(await server.call('NetworkAdapter.get_VirtualNetwork', { this: adapterRef }), { $ref: networkRef() });
    assert.equal(await page.getByLabel('Network of adapter 1', { exact: true }).inputValue(), networkId);
    await page.goto(`/networks/${networkId}`);
    assert.deepEqual((await page.locator('#connected-adapters tbody tr td').allTextContents()).slice(0, 2).map((t) => t.trim()), ['netvm', '1']);
  }));

  it('while the VM runs the picker stays usable; without host parts attaching is refused beside it (VM_E_NETWORK_NOT_PERMITTED) and nothing changes', () => step('running', async () => {
    const vm = `VirtualMachine/${vmId}`;
    // A second adapter, not attached, so that the VM can turn on without host parts; a small guest with no disk.
    const spare = (await server.call<Ref>('VirtualMachine.AddNetworkAdapter', { this: vm })).$ref;
    await server.call('NetworkAdapter.DetachFromVirtualNetwork', { this: adapterRef });
    await server.call('VirtualMachine.put_Memory', { this: vm, value: 64 });
    const task = await server.call<Ref>('VirtualMachine.Startup', { this: vm });
    assert.equal(await server.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 90_000 }), true, 'the VM turned on within 90 s');
    assert.equal(await server.call('Task.get_Error', { this: task.$ref }), null);
    try {
      await page.goto(`/vms/${vmId}`);
      assert.equal(await page.locator('#section-nics').getByRole('button', { name: 'Add adapter' }).isDisabled(), true, 'the hardware forms are disabled while it runs');
      const picker = page.getByLabel('Network of adapter 2', { exact: true });
      assert.equal(await picker.isEnabled(), true);
      await picker.selectOption({ label: 'lab' });
      await page.getByRole('button', { name: 'Apply the network of adapter 2' }).click();
      await page.locator('#nic-network-1-error').waitFor();
      assert.match(await page.locator('#nic-network-1-error').textContent() ?? '', /cannot attach or detach an adapter of the running VM netvm/);
      assert.equal(await server.call('NetworkAdapter.get_VirtualNetwork', { this: spare }), null);
    } finally {
      const off = await server.call<Ref>('VirtualMachine.TurnOff', { this: vm });
      assert.equal(await server.call('Task.WaitForCompletion', { this: off.$ref, timeoutMs: 60_000 }), true, 'the VM turned off');
      await server.call('VirtualMachine.RemoveNetworkAdapter', { this: vm, adapter: spare });
      await server.call('NetworkAdapter.AttachToVirtualNetwork', { this: adapterRef, network: networkRef() });
    }
  }));

  it('removing the network is refused while the adapter is attached: the named error and the adapter are shown, and the network stays', () => step('remove-refused', async () => {
    await page.goto(`/networks/${networkId}/remove`);
    await page.getByRole('button', { name: 'Delete its file' }).click();
    await page.locator('#how-error').waitFor();
    assert.match(await page.locator('#how-error').textContent() ?? '', /\[VM_E_NETWORK_IN_USE\]/);
    assert.match(await page.locator('#in-use').textContent() ?? '', /netvm, network adapter 1/);
    const file = await server.call<string>('VirtualNetwork.get_File', { this: networkRef() });
    assert.ok(fs.existsSync(file), 'the .vnc is still there');
    assert.equal((await server.call<Ref | null>('VirtualServer.FindVirtualNetwork', { name: 'lab' }))?.$ref, networkRef());
  }));

  it('disconnects the adapter on the VM\'s page, connects it again from the network\'s page, and disconnects it there', () => step('detach', async () => {
    await page.goto(`/vms/${vmId}`);
    await page.getByLabel('Network of adapter 1', { exact: true }).selectOption({ label: 'Not connected' });
    await page.getByRole('button', { name: 'Apply the network of adapter 1' }).click();
    await page.getByRole('status').filter({ hasText: 'The network adapters were changed.' }).waitFor();
    assert.equal(await server.call('NetworkAdapter.get_VirtualNetwork', { this: adapterRef }), null);

    await page.goto(`/networks/${networkId}`);
    await page.locator('#no-adapters').waitFor();
    await page.getByLabel('Adapter', { exact: true }).selectOption({ value: adapterRef });
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByRole('status').filter({ hasText: 'The adapter was connected.' }).waitFor();
    assert.deepEqual(await server.call('NetworkAdapter.get_VirtualNetwork', { this: adapterRef }), { $ref: networkRef() });
    await page.getByRole('button', { name: 'Disconnect netvm adapter 1' }).click();
    await page.getByRole('status').filter({ hasText: 'The adapter was disconnected.' }).waitFor();
    assert.equal(await server.call('NetworkAdapter.get_VirtualNetwork', { this: adapterRef }), null);
  }));

  it('removes the network once nothing is attached: its .vnc goes and View All no longer lists it', () => step('remove', async () => {
    const file = await server.call<string>('VirtualNetwork.get_File', { this: networkRef() });
    await page.goto(`/networks/${networkId}`);
    await page.getByRole('link', { name: 'Remove lab' }).click();
    await page.getByRole('button', { name: 'Delete its file' }).click();
    await page.waitForURL((url) => url.pathname === '/networks');
    assert.equal(await page.locator(`tr[data-network="${networkId}"]`).count(), 0);
    assert.equal(await server.call('VirtualServer.FindVirtualNetwork', { name: 'lab' }), null);
    assert.ok(!fs.existsSync(file), `${file} was deleted`);
  }));

  it('Remove from the list keeps the .vnc, and Add registers it again', () => step('add', async () => {
    const spare = (await server.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'spare', kind: 'internal' })).$ref;
    const file = await server.call<string>('VirtualNetwork.get_File', { this: spare });
    await page.goto(`/networks/${spare.slice('VirtualNetwork/'.length)}/remove`);
    await page.getByRole('button', { name: 'Remove from the list' }).click();
    await page.waitForURL((url) => url.pathname === '/networks');
    assert.equal(await server.call('VirtualServer.FindVirtualNetwork', { name: 'spare' }), null);
    assert.ok(fs.existsSync(file), 'the .vnc is kept');
    await page.getByRole('navigation', { name: 'Main' }).locator('a[href="/networks/add"]').click();
    await page.getByLabel('.vnc file').fill(file);
    await page.getByRole('button', { name: 'Add', exact: true }).click();
    await page.getByRole('heading', { name: 'Configure spare' }).waitFor();
    assert.deepEqual(await server.call('VirtualServer.FindVirtualNetwork', { name: 'spare' }), { $ref: spare });
    // The same file again: registered already, refused beside the path.
    await page.goto('/networks/add');
    await page.getByLabel('.vnc file').fill(file);
    await page.getByRole('button', { name: 'Add', exact: true }).click();
    await page.locator('#path-error').waitFor();
    assert.match(await page.locator('#form-error').textContent() ?? '', /\[VM_E_NETWORK_REGISTERED\]/);
  }));

  it('a Viewer sees the networks but no form, and cannot open Create', () => step('viewer', async () => {
    await server.call('VirtualServer.CreateUser', { name: 'vic', role: 'Viewer', password: 'viewer-password' });
    const viewerContext = await newContext(browser, server.url);
    try {
      const viewer = await viewerContext.newPage();
      await signIn(viewer, 'vic', 'viewer-password');
      await viewer.goto('/networks');
      assert.equal(await viewer.getByRole('link', { name: 'Create a virtual network' }).count(), 0);
      await viewer.getByRole('link', { name: 'spare' }).click();
      await viewer.getByRole('heading', { name: 'Configure spare' }).waitFor();
      assert.equal(await viewer.locator('main form').count(), 0, 'no forms for a Viewer');
      assert.equal(await viewer.getByRole('link', { name: 'Remove spare' }).count(), 0);
      const refused = await viewer.goto('/networks/create');
      assert.equal(refused?.status(), 403);
    } finally {
      await viewerContext.close();
    }
  }));

  it('no page broke the Content Security Policy or logged an error', () => {
    assert.deepEqual(policyViolations(), []);
    assert.deepEqual(pageErrors, []);
  });
});

describe('the traffic chart (server/site/history-chart.ts)', () => {
  const at = (i: number): string => new Date(Date.UTC(2026, 11, 5, 8, 0, 5 * i)).toISOString();
  const samples = (values: number[], from = 0): Array<{ time: string; value: number }> => values.map((value, i) => ({ time: at(from + i), value }));

  it('draws one line per series, scaled to the peak, a shorter series ending at the right edge with the others', () => {
    const svg = historyChart('Bytes per 5 seconds', 'bytes', [{ label: 'Sent', samples: samples([0, 500, 1000]) }, { label: 'Dropped', samples: samples([1000], 2) }]);
    const lines = [...svg.matchAll(/<polyline class="(series-\d)" fill="none" points="([^"]+)"\/>/g)].map((m) => [m[1], m[2].split(' ').map((p) => p.split(',').map(Number))]);
    assert.equal(lines.length, 2);
    const [[, sent], [, dropped]] = lines as Array<[string, number[][]]>;
    assert.equal(sent.length, 3);
    assert.equal(dropped.length, 1);
    assert.equal(dropped[0][0], sent[2][0], 'the one newest sample is at the right edge');
    assert.equal(sent[2][1], dropped[0][1], 'equal values are drawn at equal heights');
    assert.ok(sent[0][1] > sent[1][1] && sent[1][1] > sent[2][1], 'larger values are drawn higher');
    assert.match(svg, /<title id="chart-bytes-per-5-seconds">Bytes per 5 seconds: Sent 1 K bytes, Dropped 1 K bytes in the last interval<\/title>/);
    assert.match(svg, />08:00:00<\/text>.*>08:00:10<\/text>/);
    assert.ok(!/style=/.test(svg), 'no inline style: the page\'s CSP would refuse it');
  });

  it('says so when there are no samples yet', () => {
    const svg = historyChart('Packets per 5 seconds', 'packets', [{ label: 'Sent', samples: [] }]);
    assert.match(svg, /no samples yet/);
    assert.ok(!svg.includes('<polyline'));
  });
});
