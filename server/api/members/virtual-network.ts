// VirtualNetwork (IVMVirtualNetwork) and its DHCP server (IVMDHCPVirtualNetworkServer), declared
// member by member with their handlers. Both objects are the network's record; every change goes
// through services.networks, which keeps the catalog, the .vnc file and the host parts in step.

import type { DhcpSettings } from '../../network/dhcp-settings.js';
import { COUNTER_NAMES, type CounterName, NETWORK_KINDS } from '../../network-record.js';
import { ref } from '../../references.js';
import { boolean, field, type InterfaceRecord, integer, listOf, type MemberRecord, membersOf, nothing, object, oneOf, orNull, param, refOf, refsOf, string } from '../member-types.js';
import { NETWORK_EXAMPLE, NETWORK_ID_EXAMPLE, VM_ID_EXAMPLE } from './shared.js';

const network = membersOf<'VirtualNetwork'>(NETWORK_EXAMPLE);
const dhcp = membersOf<'DHCPVirtualNetworkServer'>(`DHCPVirtualNetworkServer/${NETWORK_ID_EXAMPLE}`);

const CHANGE_ERRORS = ['VM_E_NETWORK_NOT_PERMITTED', 'VM_E_NETWORK_FAILED'] as const;
const DHCP_ERRORS = ['VM_E_DHCP_INVALID', 'VM_E_DHCP_OVERLAP', ...CHANGE_ERRORS] as const;
const address = (doc: string) => param(string, `${doc}, dotted IPv4.`);
const addresses = (doc: string) => param(listOf(string), `${doc}, dotted IPv4 addresses.`, true);
const seconds = (doc: string, min: number) => param({ type: 'integer', min, max: 365 * 86_400 }, `${doc}, in seconds (at least ${min}).`);

/** "BytesSent" → "Bytes sent by its guests". */
export const counterDoc = (name: CounterName, whose: string): string => {
  const [, amount, way] = /^(Bytes|Packets)(\w+)$/.exec(name)!;
  return `${amount} ${way.toLowerCase()} ${way === 'Dropped' ? 'on the way to or from' : 'by'} ${whose}`;
};

function networkCounters(): Record<string, MemberRecord> {
  const history = listOf(object({ time: field(string, 'The end of the interval, ISO 8601'), value: field(integer, 'The amount in that interval') }));
  return Object.fromEntries(COUNTER_NAMES.flatMap((name) => [
    [`get_${name}`, network.get(`${counterDoc(name, 'its guests')} since the network was made (it survives restarts of vserverd).`, integer, 123456,
      ({ services, self }) => services.networks.networkCounters(self.id)[name])],
    [`get_${name}History`, network.get(`${counterDoc(name, 'its guests')}, per 5-second interval over the last hour, oldest first.`, history,
      [{ time: '2026-12-05T10:00:05.000Z', value: 1500 }], ({ services, self }) => services.networks.history(self.id, name))],
  ]));
}

export const virtualNetwork: InterfaceRecord = {
  doc: 'A virtual network (IVMVirtualNetwork): a kernel bridge on the host joining its adapters\' TAPs; internal (guests only), host (bridged to a host interface) or nat (the host routes and masquerades).',
  ref: 'VirtualNetwork/<id>',
  members: {
    get_Name: network.get('The name.', string, 'Internal Network', ({ self }) => self.name),
    put_Name: network.put('Renames the network (its .vnc keeps its file name).', { type: 'string', maxLength: 64 }, 'Lab',
      async ({ services, self, params }) => { await services.networks.rename(self.id, params.value); }, ['VM_E_NETWORK_NAME_IN_USE']),
    get_Notes: network.get('Free text about the network.', string, 'lab segment', ({ self }) => self.notes),
    put_Notes: network.put('Sets the notes.', { type: 'string', maxLength: 10_000 }, 'lab segment',
      async ({ services, self, params }) => { await services.networks.setNotes(self.id, params.value); }),
    get_Kind: network.get(`${NETWORK_KINDS.join(', ')}.`, oneOf(NETWORK_KINDS), 'internal', ({ self }) => self.kind),
    get_HostAdapter: network.get('The host interface a host-connected network is bridged to; null for the other kinds.', orNull(string), null, ({ self }) => self.hostAdapter),
    put_HostAdapter: network.put('Bridges a host-connected network to another host interface (see VirtualServer.get_HostInfo\'s networkInterfaces).', string, 'eth1',
      async ({ services, self, params }) => { await services.networks.setHostAdapter(self.id, params.value); }, ['VM_E_HOST_ADAPTER_UNKNOWN', ...CHANGE_ERRORS]),
    get_File: network.get('Its .vnc file, which another host can register.', string, '/var/lib/vserver/networks/Internal Network.vnc', ({ self }) => self.vncPath),
    get_NetworkAdapters: network.get('The adapters attached to it (of VMs on or off).', refsOf('NetworkAdapter'), [{ $ref: `NetworkAdapter/${VM_ID_EXAMPLE}/0` }],
      ({ services, self }) => services.networks.adaptersOf(self.id).map(({ vm, index }) => ref('NetworkAdapter', `${vm.id}/${index}`))),
    get_DHCPVirtualNetworkServer: network.get('Its DHCP server.', refOf('DHCPVirtualNetworkServer'), { $ref: `DHCPVirtualNetworkServer/${NETWORK_ID_EXAMPLE}` },
      ({ self }) => ref('DHCPVirtualNetworkServer', self.id)),
    ...networkCounters(),
    get_Security: network.get('The access entries that guard it (the server\'s).', refOf('Security'), { $ref: 'Security/VirtualServer' }, () => ref('Security', 'VirtualServer')),
  },
};

const setting = <K extends keyof DhcpSettings>(key: K) => ({ self }: { self: { dhcp: DhcpSettings } }): DhcpSettings[K] => self.dhcp[key];

export const dhcpServer: InterfaceRecord = {
  doc: 'The DHCP server of a virtual network (IVMDHCPVirtualNetworkServer): dnsmasq on the network\'s bridge, holding the server address there.',
  ref: 'DHCPVirtualNetworkServer/<network id>',
  members: {
    get_IsEnabled: dhcp.get('Whether it runs.', boolean, true, setting('enabled')),
    put_IsEnabled: dhcp.put('Turns it on or off.', boolean, true,
      async ({ services, self, params }) => { await services.networks.configureDhcp(self.id, { enabled: params.value }); }, DHCP_ERRORS),
    ConfigureDHCPServer: dhcp.method('Sets the network it serves and its options, checked together: a contiguous mask, every address inside the network, the server outside the range, no overlap with another virtual network.', {
      params: {
        network: address('The network address'), networkMask: address('The mask (contiguous: 255.255.255.0, not 255.0.255.0)'),
        startingIPAddress: address('The first address it leases'), endingIPAddress: address('The last address it leases'),
        serverIPAddress: address('Its own address (the host holds it on the bridge)'),
        defaultGateway: param(orNull(string), 'The router it hands out, or null for none; left out, a NAT network\'s is the server address (the host) and the other kinds\' is none.', true),
        dnsServers: addresses('DNS servers it hands out (none when left out)'), winsServers: addresses('WINS servers it hands out (none when left out)'),
      },
      returns: nothing, right: 'change', errors: DHCP_ERRORS,
      example: { params: { network: '10.237.0.0', networkMask: '255.255.255.0', startingIPAddress: '10.237.0.16', endingIPAddress: '10.237.0.254', serverIPAddress: '10.237.0.1' }, result: null },
      handler: async ({ services, self, params }) => {
        await services.networks.configureDhcp(self.id, {
          networkAddress: params.network, networkMask: params.networkMask, startingAddress: params.startingIPAddress,
          endingAddress: params.endingIPAddress, serverAddress: params.serverIPAddress,
          // Left out: a NAT network's router is the host (the server address); the other kinds hand out none.
          defaultGateway: params.defaultGateway !== undefined ? params.defaultGateway : self.kind === 'nat' ? params.serverIPAddress : null,
          dnsServers: [...params.dnsServers ?? []], winsServers: [...params.winsServers ?? []],
        });
      },
    }),
    ConfigureDHCPLeaseTimes: dhcp.method('Sets the lease, renewal (T1) and rebinding (T2) times: renewal < rebinding < lease.', {
      params: { leaseTime: seconds('How long a lease lasts', 60), renewalTime: seconds('When a guest asks to renew', 30), rebindingTime: seconds('When a guest asks any server', 45) },
      returns: nothing, right: 'change', errors: DHCP_ERRORS,
      example: { params: { leaseTime: 86_400, renewalTime: 43_200, rebindingTime: 75_600 }, result: null },
      handler: async ({ services, self, params }) => { await services.networks.configureDhcp(self.id, params); },
    }),
    get_NetworkAddress: dhcp.get('The network it serves.', string, '10.237.0.0', setting('networkAddress')),
    get_NetworkMask: dhcp.get('The network\'s mask.', string, '255.255.255.0', setting('networkMask')),
    get_StartingIPAddress: dhcp.get('The first address it leases.', string, '10.237.0.16', setting('startingAddress')),
    get_EndingIPAddress: dhcp.get('The last address it leases.', string, '10.237.0.254', setting('endingAddress')),
    get_ServerIPAddress: dhcp.get('Its own address.', string, '10.237.0.1', setting('serverAddress')),
    get_DefaultGatewayAddress: dhcp.get('The router it hands out, or null.', orNull(string), null, setting('defaultGateway')),
    get_DNSServers: dhcp.get('The DNS servers it hands out.', listOf(string), [], setting('dnsServers')),
    get_WINSServers: dhcp.get('The WINS servers it hands out.', listOf(string), [], setting('winsServers')),
    get_LeaseTime: dhcp.get('Lease time, seconds.', integer, 86_400, setting('leaseTime')),
    get_RenewalTime: dhcp.get('Renewal time (T1), seconds.', integer, 43_200, setting('renewalTime')),
    get_RebindingTime: dhcp.get('Rebinding time (T2), seconds.', integer, 75_600, setting('rebindingTime')),
    get_Leases: dhcp.get('The leases it has given, kept across restarts of vserverd and of dnsmasq.',
      listOf(object({ mac: field(string, 'The guest adapter\'s MAC address'), address: field(string, 'The leased address'), hostname: field(string, 'The name the guest gave, or ""'), expires: field(orNull(string), 'When the lease ends, ISO 8601; null for a lease without end') })),
      [{ mac: '00:03:FF:1A:2B:3C', address: '10.237.0.16', hostname: 'web', expires: '2026-12-06T10:00:00.000Z' }],
      ({ services, self }) => services.networks.leases(self.id)),
  },
};
