// Virtual networks as catalog objects, through the API of a real vserverd whose host networks are
// off (the test runner's VSERVER_HOST_NETWORKS=0): the first network, create, rename, notes,
// DHCP settings and their named refusals, .vnc files registered elsewhere, MAC addresses unique
// among the host's VMs, adapters attached and detached while off, and the refusals that need a
// host part. Bridges, TAPs, dnsmasq and traffic are test/host-network.test.ts's and
// test/networks-vm.test.ts's, inside network namespaces.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { rejectsWith, TestServer } from './helpers/server.js';

interface Ref { $ref: string }

let server: TestServer;
const call = <T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> => server.call<T>(method, params);
const dhcpOf = (network: Ref): string => network.$ref.replace('VirtualNetwork/', 'DHCPVirtualNetworkServer/');

async function dhcpSettings(network: Ref): Promise<Record<string, unknown>> {
  const self = { this: dhcpOf(network) };
  const names = ['IsEnabled', 'NetworkAddress', 'NetworkMask', 'StartingIPAddress', 'EndingIPAddress', 'ServerIPAddress', 'DefaultGatewayAddress', 'DNSServers', 'WINSServers', 'LeaseTime', 'RenewalTime', 'RebindingTime'];
  return Object.fromEntries(await Promise.all(names.map(async (n) => [n, await call(`DHCPVirtualNetworkServer.get_${n}`, self)])));
}

describe('virtual networks through the API (catalog objects, host parts off)', { timeout: 60_000 }, () => {
  let lab: Ref;
  let vm: Ref;

  before(async () => {
    server = await TestServer.start();
  });

  after(async () => {
    await server?.stop();
    server?.remove();
  });

  it('a first start creates "Internal Network": internal, DHCP off, its .vnc beside the catalog', async () => {
    const networks = await call<Ref[]>('VirtualServer.get_VirtualNetworks');
    assert.equal(networks.length, 1);
    const [internal] = networks;
    assert.deepEqual(await call('VirtualServer.FindVirtualNetwork', { name: 'internal network' }), internal);
    assert.equal(await call('VirtualNetwork.get_Name', { this: internal.$ref }), 'Internal Network');
    assert.equal(await call('VirtualNetwork.get_Kind', { this: internal.$ref }), 'internal');
    assert.equal(await call('DHCPVirtualNetworkServer.get_IsEnabled', { this: dhcpOf(internal) }), false);
    const file = await call<string>('VirtualNetwork.get_File', { this: internal.$ref });
    assert.equal(file, path.join(server.dataDir, 'networks', 'Internal Network.vnc'));
    assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).name, 'Internal Network');
  });

  it('creates a NAT network with the next free 10.237.N.0/24 and its DHCP server on, the host as gateway', async () => {
    lab = await call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'Lab', kind: 'nat' });
    assert.deepEqual(await dhcpSettings(lab), {
      IsEnabled: true, NetworkAddress: '10.237.1.0', NetworkMask: '255.255.255.0', StartingIPAddress: '10.237.1.16', EndingIPAddress: '10.237.1.254',
      ServerIPAddress: '10.237.1.1', DefaultGatewayAddress: '10.237.1.1', DNSServers: [], WINSServers: [], LeaseTime: 86_400, RenewalTime: 43_200, RebindingTime: 75_600,
    });
    assert.deepEqual(await call('VirtualNetwork.get_HostAdapter', { this: lab.$ref }), null);
  });

  it('refuses a duplicate name (any case), a host adapter the host lacks, and a host adapter on another kind', async () => {
    await rejectsWith(call('VirtualServer.CreateVirtualNetwork', { name: 'lab', kind: 'internal' }), 'VM_E_NETWORK_NAME_IN_USE', /Lab/);
    await rejectsWith(call('VirtualServer.CreateVirtualNetwork', { name: 'LAN', kind: 'host', hostAdapter: 'nosuch0' }), 'VM_E_HOST_ADAPTER_UNKNOWN', /nosuch0/);
    await rejectsWith(call('VirtualServer.CreateVirtualNetwork', { name: 'LAN', kind: 'host' }), 'VM_E_INVALID_PARAMS', /hostAdapter/);
    await rejectsWith(call('VirtualServer.CreateVirtualNetwork', { name: 'LAN', kind: 'internal', hostAdapter: 'lo' }), 'VM_E_INVALID_PARAMS', /host-connected/);
    await rejectsWith(call('VirtualServer.CreateVirtualNetwork', { name: '../x', kind: 'internal' }), 'VM_E_INVALID_PARAMS', /"\/"/);
    assert.equal((await call<Ref[]>('VirtualServer.get_VirtualNetworks')).length, 2, 'nothing was made');
  });

  it('renames and takes notes; the .vnc follows', async () => {
    await call('VirtualNetwork.put_Name', { this: lab.$ref, value: 'Lab NAT' });
    await call('VirtualNetwork.put_Notes', { this: lab.$ref, value: 'for the failover tests' });
    const file = await call<string>('VirtualNetwork.get_File', { this: lab.$ref });
    const vnc = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.deepEqual([vnc.name, vnc.notes], ['Lab NAT', 'for the failover tests']);
    await rejectsWith(call('VirtualNetwork.put_Name', { this: lab.$ref, value: 'INTERNAL NETWORK' }), 'VM_E_NETWORK_NAME_IN_USE');
  });

  it('refuses bad DHCP settings by field, an overlap with another network by name, and changes nothing', async () => {
    const before = await dhcpSettings(lab);
    const base = { this: dhcpOf(lab), network: '10.237.1.0', networkMask: '255.255.255.0', startingIPAddress: '10.237.1.20', endingIPAddress: '10.237.1.40', serverIPAddress: '10.237.1.1' };
    const mask = await rejectsWith(call('DHCPVirtualNetworkServer.ConfigureDHCPServer', { ...base, networkMask: '255.0.255.0' }), 'VM_E_DHCP_INVALID');
    assert.ok((mask.data.problems as { field: string }[]).some((p) => p.field === 'networkMask'), JSON.stringify(mask.data));
    const outside = await rejectsWith(call('DHCPVirtualNetworkServer.ConfigureDHCPServer', { ...base, endingIPAddress: '10.237.2.40' }), 'VM_E_DHCP_INVALID');
    assert.ok((outside.data.problems as { field: string }[]).some((p) => p.field === 'endingAddress'), JSON.stringify(outside.data));
    await rejectsWith(call('DHCPVirtualNetworkServer.ConfigureDHCPServer', { ...base, serverIPAddress: '10.237.1.30' }), 'VM_E_DHCP_INVALID', /range/);
    await rejectsWith(call('DHCPVirtualNetworkServer.ConfigureDHCPServer', { ...base, startingIPAddress: '10.237.1.50' }), 'VM_E_DHCP_INVALID');
    await rejectsWith(call('DHCPVirtualNetworkServer.ConfigureDHCPServer', { ...base, network: '10.237.0.0', startingIPAddress: '10.237.0.20', endingIPAddress: '10.237.0.40', serverIPAddress: '10.237.0.1' }),
      'VM_E_DHCP_OVERLAP', /Internal Network/);
    await rejectsWith(call('DHCPVirtualNetworkServer.ConfigureDHCPLeaseTimes', { this: dhcpOf(lab), leaseTime: 600, renewalTime: 500, rebindingTime: 400 }), 'VM_E_DHCP_INVALID');
    assert.deepEqual(await dhcpSettings(lab), before);
  });

  it('takes good DHCP settings and lease times', async () => {
    await call('DHCPVirtualNetworkServer.ConfigureDHCPServer', {
      this: dhcpOf(lab), network: '192.168.50.0', networkMask: '255.255.255.0', startingIPAddress: '192.168.50.100', endingIPAddress: '192.168.50.199',
      serverIPAddress: '192.168.50.1', dnsServers: ['192.168.50.1'], winsServers: ['192.168.50.2'],
    });
    await call('DHCPVirtualNetworkServer.ConfigureDHCPLeaseTimes', { this: dhcpOf(lab), leaseTime: 3600, renewalTime: 1800, rebindingTime: 3000 });
    const settings = await dhcpSettings(lab);
    assert.deepEqual([settings.StartingIPAddress, settings.DefaultGatewayAddress, settings.DNSServers, settings.WINSServers, settings.LeaseTime],
      ['192.168.50.100', '192.168.50.1', ['192.168.50.1'], ['192.168.50.2'], 3600]);
    assert.deepEqual(await call('DHCPVirtualNetworkServer.get_Leases', { this: dhcpOf(lab) }), []);
  });

  it('gives adapters MAC addresses unique on the host; a static one another VM holds is refused', async () => {
    vm = await call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'nic-vm' });
    const other = await call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'nic-other' });
    const nic = await call<Ref>('VirtualMachine.AddNetworkAdapter', { this: vm.$ref, network: lab.$ref });
    assert.equal(await call('NetworkAdapter.get_IsEthernetAddressDynamic', { this: nic.$ref }), true);
    await call('NetworkAdapter.put_EthernetAddress', { this: nic.$ref, value: '00-03-ff-0a-0b-0c' });
    assert.equal(await call('NetworkAdapter.get_EthernetAddress', { this: nic.$ref }), '00:03:FF:0A:0B:0C');
    assert.equal(await call('NetworkAdapter.get_IsEthernetAddressDynamic', { this: nic.$ref }), false);
    await rejectsWith(call('VirtualMachine.AddNetworkAdapter', { this: other.$ref, ethernetAddress: '00:03:FF:0A:0B:0C' }), 'VM_E_MAC_IN_USE', /nic-vm/);
    await rejectsWith(call('VirtualMachine.AddNetworkAdapter', { this: other.$ref, ethernetAddress: '52:54:00:0A:0B:0C' }), 'VM_E_MAC_INVALID');
    const second = await call<Ref>('VirtualMachine.AddNetworkAdapter', { this: other.$ref });
    await rejectsWith(call('NetworkAdapter.put_EthernetAddress', { this: second.$ref, value: '00:03:ff:0a:0b:0c' }), 'VM_E_MAC_IN_USE', /nic-vm/);
    await call('NetworkAdapter.put_IsEthernetAddressDynamic', { this: nic.$ref, value: true });
    assert.notEqual(await call('NetworkAdapter.get_EthernetAddress', { this: nic.$ref }), '00:03:FF:0A:0B:0C');
    assert.deepEqual(await call('VirtualServer.get_UnconnectedNetworkAdapters'), [second]);
    await call('VirtualServer.DeleteVirtualMachine', { vm: other.$ref });
  });

  it('refuses to delete a network with adapters attached, naming them; detached, it goes with its .vnc', async () => {
    const nic = { $ref: `NetworkAdapter/${vm.$ref.slice('VirtualMachine/'.length)}/0` };
    assert.deepEqual(await call('VirtualNetwork.get_NetworkAdapters', { this: lab.$ref }), [nic]);
    assert.deepEqual(await call('NetworkAdapter.get_VirtualNetwork', { this: nic.$ref }), lab);
    const refused = await rejectsWith(call('VirtualServer.DeleteVirtualNetwork', { network: lab.$ref }), 'VM_E_NETWORK_IN_USE', /adapter 0 of nic-vm/);
    assert.deepEqual(refused.data.adapters, [nic.$ref]);
    await call('NetworkAdapter.DetachFromVirtualNetwork', { this: nic.$ref });
    assert.equal(await call('NetworkAdapter.get_VirtualNetwork', { this: nic.$ref }), null);
    const file = await call<string>('VirtualNetwork.get_File', { this: lab.$ref });
    await call('VirtualServer.DeleteVirtualNetwork', { network: lab.$ref });
    assert.equal(fs.existsSync(file), false);
    await rejectsWith(call('VirtualNetwork.get_Name', { this: lab.$ref }), 'VM_E_NETWORK_UNKNOWN');
  });

  it('unregisters keeping the .vnc, registers it again (as another host would), and refuses it twice or damaged', async () => {
    const net = await call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'Shared', kind: 'internal' });
    const file = await call<string>('VirtualNetwork.get_File', { this: net.$ref });
    await call('VirtualServer.UnregisterVirtualNetwork', { network: net.$ref });
    assert.ok(fs.existsSync(file));
    assert.deepEqual(await call('VirtualServer.RegisterVirtualNetwork', { path: file }), net);
    await rejectsWith(call('VirtualServer.RegisterVirtualNetwork', { path: file }), 'VM_E_NETWORK_REGISTERED', /Shared/);
    const damaged = path.join(server.dataDir, 'damaged.vnc');
    fs.writeFileSync(damaged, JSON.stringify({ format: 'vserver-network', version: 1, id: 'not-a-uuid' }));
    await rejectsWith(call('VirtualServer.RegisterVirtualNetwork', { path: damaged }), 'VM_E_NETWORK_FILE_INVALID', /"id"/);
  });

  it('without host parts, turning on a VM with an attached adapter and attaching while running say why', async () => {
    const internal = await call<Ref>('VirtualServer.FindVirtualNetwork', { name: 'Internal Network' });
    const nic = { $ref: `NetworkAdapter/${vm.$ref.slice('VirtualMachine/'.length)}/0` };
    await call('NetworkAdapter.AttachToVirtualNetwork', { this: nic.$ref, network: internal.$ref });
    await rejectsWith(call('VirtualMachine.Startup', { this: vm.$ref }), 'VM_E_NETWORK_NOT_PERMITTED', /--no-host-networks/);
    await rejectsWith(call('NetworkAdapter.AttachToVirtualNetwork', { this: nic.$ref, network: 'VirtualNetwork/00000000-0000-4000-8000-000000000000' }), 'VM_E_NETWORK_UNKNOWN');
  });
});

describe('a registered VM whose MAC addresses other VMs hold', { timeout: 60_000 }, () => {
  let host: TestServer;

  before(async () => {
    host = await TestServer.start();
  });

  after(async () => {
    await host?.stop();
    host?.remove();
  });

  it('gets new dynamic addresses, and is refused for a static one, naming the holder', async () => {
    const first = await host.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'first' });
    const dynamic = await host.call<Ref>('VirtualMachine.AddNetworkAdapter', { this: first.$ref });
    const staticNic = await host.call<Ref>('VirtualMachine.AddNetworkAdapter', { this: first.$ref, ethernetAddress: '00:03:FF:00:00:42' });
    const [dynamicMac] = await Promise.all([dynamic, staticNic].map((n) => host.call<string>('NetworkAdapter.get_EthernetAddress', { this: n.$ref })));
    const folder = path.join(host.dataDir, 'copies');
    fs.mkdirSync(folder);
    const copy = (name: string, adapters: unknown[]): string => {
      const file = path.join(folder, `${name}.vmc`);
      fs.writeFileSync(file, JSON.stringify({ version: 1, name, networkAdapters: adapters }));
      return file;
    };
    const clone = await host.call<Ref>('VirtualServer.RegisterVirtualMachine', { path: copy('clone', [{ mac: dynamicMac }]) });
    const cloneMac = await host.call<string>('NetworkAdapter.get_EthernetAddress', { this: `NetworkAdapter/${clone.$ref.slice('VirtualMachine/'.length)}/0` });
    assert.notEqual(cloneMac, dynamicMac);
    await rejectsWith(host.call('VirtualServer.RegisterVirtualMachine', { path: copy('twin', [{ mac: '00:03:FF:00:00:42', dynamicMac: false }]) }), 'VM_E_MAC_IN_USE', /first/);
    assert.equal(await host.call('VirtualServer.FindVirtualMachine', { name: 'twin' }), null, 'the refused VM is not registered');
  });
});

describe('an adapter keeps its network\'s name beside its id', { timeout: 60_000 }, () => {
  let host: TestServer;
  const other = '00000000-0000-4000-8000-0000000000aa';

  before(async () => {
    host = await TestServer.start();
  });

  after(async () => {
    await host?.stop();
    host?.remove();
  });

  /** Registers a hand-written .vmc with one adapter; returns the adapter and the .vmc's path. */
  async function register(name: string, adapter: Record<string, unknown>): Promise<{ nic: string; file: string }> {
    const file = path.join(host.dataDir, `${name}.vmc`);
    fs.writeFileSync(file, JSON.stringify({ version: 1, name, networkAdapters: [adapter] }));
    const vm = await host.call<Ref>('VirtualServer.RegisterVirtualMachine', { path: file });
    return { nic: `NetworkAdapter/${vm.$ref.slice('VirtualMachine/'.length)}/0`, file };
  }

  const nameInFile = (file: string): unknown => (JSON.parse(fs.readFileSync(file, 'utf8')) as { networkAdapters: Array<{ networkName: unknown }> }).networkAdapters[0].networkName;

  it('a .vmc written before names were kept gets the name of its network; a rename and a detach follow', async () => {
    const internal = await host.call<Ref>('VirtualServer.FindVirtualNetwork', { name: 'Internal Network' });
    const { nic, file } = await register('old', { network: internal.$ref.slice('VirtualNetwork/'.length) });
    assert.equal(await host.call('NetworkAdapter.get_VirtualNetworkName', { this: nic }), 'Internal Network');
    assert.equal(nameInFile(file), 'Internal Network', 'the .vmc holds it');
    await host.call('VirtualNetwork.put_Name', { this: internal.$ref, value: 'Inside' });
    assert.equal(nameInFile(file), 'Inside', 'a rename reaches the .vmc of the attached adapters');
    await host.call('NetworkAdapter.DetachFromVirtualNetwork', { this: nic });
    assert.equal(await host.call('NetworkAdapter.get_VirtualNetworkName', { this: nic }), null, 'a detached adapter awaits no network');
  });

  it('an id not registered here is replaced by this host\'s network of the name (any case); without the name it is not connected, with a warning', async () => {
    const inside = await host.call<Ref>('VirtualServer.FindVirtualNetwork', { name: 'Inside' });
    const moved = await register('moved', { network: other, networkName: 'INSIDE' });
    assert.deepEqual(await host.call('NetworkAdapter.get_VirtualNetwork', { this: moved.nic }), inside);
    const since = (await host.call<Array<{ id: number }>>('VirtualServer.GetEvents', { limit: 1, newestFirst: true }))[0].id;
    const lost = await register('lost', { network: other });
    assert.equal(await host.call('NetworkAdapter.get_VirtualNetwork', { this: lost.nic }), null);
    const events = await host.call<Array<{ severity: string; message: string }>>('VirtualServer.GetEvents', { since, limit: 100 });
    assert.ok(events.some((e) => e.severity === 'Warning' && e.message.includes('lost: network adapter 0 is left not connected') && e.message.includes(other)), JSON.stringify(events));
  });
});
