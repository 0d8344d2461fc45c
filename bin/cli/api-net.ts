// The vsctl net verbs (list, show, create, delete, dhcp, leases) and "vm nic attach|detach",
// through vserverd. Every flag that carries an API parameter is read and checked as that
// parameter's declaration says (server/api/fields.ts), so the limits live in one place.

import { type Field, fieldOf } from '../../server/api/fields.js';
import { ApiCallError, type ApiClient, isRef } from './api-client.js';
import { clientFor, CONNECTION_OPTIONS, parseValue } from './api-call.js';
import { idOf, parseCount, print, printTable, refOf } from './api-output.js';
import { resolveVm } from './api-vm.js';
import type { Command, OptionSpec } from './command.js';
import { printRows, UsageError } from './terminal.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NETWORK_PREFIX = 'VirtualNetwork/';
type Params = Record<string, unknown>;

/** A network named on the command line: a reference, an id (a UUID), or a name found with FindVirtualNetwork. */
export async function resolveNetwork(client: ApiClient, text: string): Promise<string> {
  if (text.startsWith(NETWORK_PREFIX)) return text;
  if (UUID.test(text)) return `${NETWORK_PREFIX}${text.toLowerCase()}`;
  const found = await client.call('VirtualServer.FindVirtualNetwork', { name: text });
  if (found === null || found === undefined) throw new ApiCallError('VM_E_NETWORK_UNKNOWN', `no virtual network is named "${text}" on ${client.url}`, { name: text });
  return refOf(found, 'FindVirtualNetwork');
}

// ---------------------------------------------------------------------------------------------
// Flags that carry API parameters

/** A flag and the parameter it gives: its value is parsed and checked as the declaration says. */
interface ParamFlag { flag: string; method: string; param: string; valueName: string; what: string }

const CREATE = 'VirtualServer.CreateVirtualNetwork';
const CONFIGURE = 'DHCPVirtualNetworkServer.ConfigureDHCPServer';
const LEASE_TIMES = 'DHCPVirtualNetworkServer.ConfigureDHCPLeaseTimes';

const KIND_FLAG: ParamFlag = { flag: 'kind', method: CREATE, param: 'kind', valueName: 'KIND', what: 'the kind of network' };
const HOST_ADAPTER_FLAG: ParamFlag = { flag: 'host-adapter', method: CREATE, param: 'hostAdapter', valueName: 'IF', what: 'the host interface a host network is bridged to' };

/** The DHCP server's address flags, each with its getter (the current value fills what is not given). */
const ADDRESS_FLAGS: Array<ParamFlag & { getter: string }> = [
  { flag: 'network', method: CONFIGURE, param: 'network', valueName: 'A', what: 'the network address', getter: 'get_NetworkAddress' },
  { flag: 'mask', method: CONFIGURE, param: 'networkMask', valueName: 'M', what: 'the network mask', getter: 'get_NetworkMask' },
  { flag: 'start', method: CONFIGURE, param: 'startingIPAddress', valueName: 'A', what: 'the first address leased', getter: 'get_StartingIPAddress' },
  { flag: 'end', method: CONFIGURE, param: 'endingIPAddress', valueName: 'A', what: 'the last address leased', getter: 'get_EndingIPAddress' },
  { flag: 'server', method: CONFIGURE, param: 'serverIPAddress', valueName: 'A', what: 'the DHCP server\'s own address', getter: 'get_ServerIPAddress' },
  { flag: 'gateway', method: CONFIGURE, param: 'defaultGateway', valueName: 'A', what: 'the default gateway offered ("none" for none)', getter: 'get_DefaultGatewayAddress' },
  { flag: 'dns', method: CONFIGURE, param: 'dnsServers', valueName: 'A,B', what: 'the DNS servers offered, comma-separated ("" for none)', getter: 'get_DNSServers' },
  { flag: 'wins', method: CONFIGURE, param: 'winsServers', valueName: 'A,B', what: 'the WINS servers offered, comma-separated ("" for none)', getter: 'get_WINSServers' },
];

/** The lease time flags, in seconds. */
const TIME_FLAGS: Array<ParamFlag & { getter: string }> = [
  { flag: 'lease', method: LEASE_TIMES, param: 'leaseTime', valueName: 'S', what: 'the lease time in seconds', getter: 'get_LeaseTime' },
  { flag: 'renewal', method: LEASE_TIMES, param: 'renewalTime', valueName: 'S', what: 'the renewal time (T1) in seconds, below the rebinding time', getter: 'get_RenewalTime' },
  { flag: 'rebinding', method: LEASE_TIMES, param: 'rebindingTime', valueName: 'S', what: 'the rebinding time (T2) in seconds, below the lease time', getter: 'get_RebindingTime' },
];

/** The declared field behind a flag (read when the command runs or its help is shown). */
const fieldFor = (f: ParamFlag): Field => fieldOf(f.method, f.param);

/** The declared limits and choices of a flag's parameter, for its help line. */
function limitsText(f: ParamFlag): string {
  const field = fieldFor(f);
  if (field.kind === 'choice') return `: ${field.choices?.join('|') ?? ''}`;
  if (field.kind === 'integer' && field.min !== undefined) return ` (at least ${field.min}${field.max === undefined ? '' : `, at most ${field.max}`})`;
  return '';
}

function optionOf(f: ParamFlag): OptionSpec {
  return { type: 'string', valueName: f.valueName, description: `${f.what}${limitsText(f)}` };
}

/** A flag's text as its parameter's value; "none" is no gateway where the parameter may be null. */
function flagValue(f: ParamFlag, text: string): unknown {
  const field = fieldFor(f);
  if (f.flag === 'gateway' && text.toLowerCase() === 'none') return null;
  if (field.kind === 'list' && text.trim() === '') return [];
  return parseValue(`--${f.flag}`, text, field.type);
}

// ---------------------------------------------------------------------------------------------
// Reading networks

const NETWORK_MEMBERS = ['get_Name', 'get_Kind', 'get_HostAdapter', 'get_Notes', 'get_File', 'get_NetworkAdapters', 'get_DHCPVirtualNetworkServer'] as const;
const DHCP_MEMBERS = [
  'get_IsEnabled', 'get_NetworkAddress', 'get_NetworkMask', 'get_StartingIPAddress', 'get_EndingIPAddress', 'get_ServerIPAddress',
  'get_DefaultGatewayAddress', 'get_DNSServers', 'get_WINSServers', 'get_LeaseTime', 'get_RenewalTime', 'get_RebindingTime',
] as const;
const COUNTERS = ['BytesSent', 'BytesReceived', 'BytesDropped', 'PacketsSent', 'PacketsReceived', 'PacketsDropped'] as const;

export interface DhcpView {
  ref: string; enabled: boolean; networkAddress: string; networkMask: string; startingAddress: string; endingAddress: string;
  serverAddress: string; defaultGateway: string | null; dnsServers: string[]; winsServers: string[];
  leaseTime: number; renewalTime: number; rebindingTime: number;
}

async function readDhcp(client: ApiClient, ref: string): Promise<DhcpView> {
  const d = await client.properties(ref, 'DHCPVirtualNetworkServer', DHCP_MEMBERS);
  return {
    ref, enabled: d.get_IsEnabled === true, networkAddress: String(d.get_NetworkAddress), networkMask: String(d.get_NetworkMask),
    startingAddress: String(d.get_StartingIPAddress), endingAddress: String(d.get_EndingIPAddress), serverAddress: String(d.get_ServerIPAddress),
    defaultGateway: (d.get_DefaultGatewayAddress as string | null) ?? null, dnsServers: (d.get_DNSServers ?? []) as string[],
    winsServers: (d.get_WINSServers ?? []) as string[], leaseTime: Number(d.get_LeaseTime), renewalTime: Number(d.get_RenewalTime), rebindingTime: Number(d.get_RebindingTime),
  };
}

interface AdapterView { adapter: string; vm: string; vmName: string | null; index: number }

/** The adapters' VMs by name: one batch; a VM that cannot be read shows its id. */
async function describeAdapters(client: ApiClient, adapters: string[]): Promise<AdapterView[]> {
  const parts = adapters.map((a) => /^NetworkAdapter\/([^/]+)\/(\d+)$/.exec(a));
  const outcomes = await client.batch(parts.map((p): [string, Params] => ['VirtualMachine.get_Name', { this: `VirtualMachine/${p?.[1] ?? ''}` }]));
  return adapters.map((adapter, i) => {
    const o = outcomes[i];
    return { adapter, vm: `VirtualMachine/${parts[i]?.[1] ?? '?'}`, vmName: o.ok ? String(o.result) : null, index: Number(parts[i]?.[2] ?? -1) };
  });
}

const adapterText = (a: AdapterView): string => `${a.vmName ?? a.vm} adapter ${a.index}`;

async function showNetwork(client: ApiClient, ref: string): Promise<Record<string, unknown>> {
  const p = await client.properties(ref, 'VirtualNetwork', [...NETWORK_MEMBERS, ...COUNTERS.map((c) => `get_${c}`)]);
  const adapters = ((p.get_NetworkAdapters ?? []) as unknown[]).map((a) => refOf(a, 'get_NetworkAdapters'));
  return {
    id: idOf(ref), ref, name: p.get_Name, kind: p.get_Kind, hostAdapter: p.get_HostAdapter ?? null, notes: p.get_Notes ?? '', file: p.get_File,
    dhcp: await readDhcp(client, refOf(p.get_DHCPVirtualNetworkServer, 'get_DHCPVirtualNetworkServer')),
    adapters: await describeAdapters(client, adapters),
    counters: Object.fromEntries(COUNTERS.map((c) => [c[0].toLowerCase() + c.slice(1), p[`get_${c}`]])),
  };
}

function dhcpRows(d: DhcpView, label = 'DHCP'): Array<[string, string]> {
  const list = (items: string[]): string => (items.length ? items.join(', ') : 'none');
  return [
    [label, d.enabled ? 'enabled' : 'disabled'],
    ['  Network', `${d.networkAddress} mask ${d.networkMask}`],
    ['  Addresses leased', `${d.startingAddress} to ${d.endingAddress}`],
    ['  Server address', d.serverAddress],
    ['  Default gateway', d.defaultGateway ?? 'none'],
    ['  DNS servers', list(d.dnsServers)],
    ['  WINS servers', list(d.winsServers)],
    ['  Lease time', `${d.leaseTime} s (renewal ${d.renewalTime} s, rebinding ${d.rebindingTime} s)`],
  ];
}

/** What a network without a host adapter is, by kind. */
const NO_HOST_ADAPTER: Record<string, string> = { internal: 'none (guests only)', nat: 'none (NAT through the host\'s routes)' };

function printNetwork(n: Record<string, unknown>): void {
  const adapters = n.adapters as AdapterView[];
  const counters = n.counters as Record<string, number>;
  const rows: Array<[string, string]> = [
    ['Name', String(n.name)], ['Id', String(n.id)], ['Kind', String(n.kind)], ['Host adapter', n.hostAdapter === null ? NO_HOST_ADAPTER[String(n.kind)] ?? 'none' : String(n.hostAdapter)],
    ['Notes', String(n.notes) || '-'], ['File', String(n.file)],
    ...dhcpRows(n.dhcp as DhcpView),
  ];
  if (adapters.length === 0) rows.push(['Adapters', 'none']);
  adapters.forEach((a, i) => rows.push([i === 0 ? 'Adapters' : '', adapterText(a)]));
  rows.push(['Sent', `${counters.bytesSent} bytes, ${counters.packetsSent} packets`],
    ['Received', `${counters.bytesReceived} bytes, ${counters.packetsReceived} packets`],
    ['Dropped', `${counters.bytesDropped} bytes, ${counters.packetsDropped} packets`]);
  printRows(rows);
}

interface NetworkRow { id: string; ref: string; name: string; kind: string; hostAdapter: string | null; dhcp: boolean; adapters: number }

async function listNetworks(client: ApiClient): Promise<NetworkRow[]> {
  const refs = (await client.call<unknown[]>('VirtualServer.get_VirtualNetworks')).map((n) => refOf(n, 'get_VirtualNetworks'));
  const members = ['get_Name', 'get_Kind', 'get_HostAdapter', 'get_NetworkAdapters', 'get_DHCPVirtualNetworkServer'];
  const results = await client.batchAll(refs.flatMap((ref) => members.map((m): [string, Params] => [`VirtualNetwork.${m}`, { this: ref }])));
  const dhcpRefs = refs.map((_, i) => refOf(results[i * members.length + 4], 'get_DHCPVirtualNetworkServer'));
  const enabled = await client.batchAll(dhcpRefs.map((ref): [string, Params] => ['DHCPVirtualNetworkServer.get_IsEnabled', { this: ref }]));
  return refs.map((ref, i) => {
    const [name, kind, hostAdapter, adapters] = results.slice(i * members.length, (i + 1) * members.length);
    return { id: idOf(ref), ref, name: String(name), kind: String(kind), hostAdapter: (hostAdapter as string | null) ?? null, dhcp: enabled[i] === true, adapters: (adapters as unknown[]).length };
  }).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
}

/** The flags among `flags` that were given, as their parameters' values. */
function given(args: { values: Record<string, unknown> }, flags: ParamFlag[]): Map<ParamFlag, unknown> {
  const out = new Map<ParamFlag, unknown>();
  for (const f of flags) {
    const text = args.values[f.flag];
    if (typeof text === 'string') out.set(f, flagValue(f, text));
  }
  return out;
}

/** The DHCP server's settings changed by the given flags: the rest are the current values, so each Configure call gets them all. */
async function configureDhcp(client: ApiClient, dhcp: string, addresses: Map<ParamFlag, unknown>, times: Map<ParamFlag, unknown>): Promise<void> {
  const current = async (flags: Array<ParamFlag & { getter: string }>): Promise<Params> => {
    const values = await client.properties(dhcp, 'DHCPVirtualNetworkServer', flags.map((f) => f.getter));
    return Object.fromEntries(flags.map((f) => [f.param, values[f.getter]]));
  };
  if (addresses.size) {
    const params = { ...await current(ADDRESS_FLAGS), ...Object.fromEntries([...addresses].map(([f, v]) => [f.param, v])) };
    await client.call(CONFIGURE, { this: dhcp, ...params });
  }
  if (times.size) {
    const params = { ...await current(TIME_FLAGS), ...Object.fromEntries([...times].map(([f, v]) => [f.param, v])) };
    await client.call(LEASE_TIMES, { this: dhcp, ...params });
  }
}

// ---------------------------------------------------------------------------------------------
// The commands

const flagOptions = (flags: ParamFlag[]): Record<string, OptionSpec> => Object.fromEntries(flags.map((f) => [f.flag, optionOf(f)]));

function dhcpOptions(): Record<string, OptionSpec> {
  return {
    enable: { type: 'boolean', description: 'turn the DHCP server on (after the settings below are applied)' },
    disable: { type: 'boolean', description: 'turn the DHCP server off (before the settings below are applied)' },
    ...flagOptions(ADDRESS_FLAGS),
    ...flagOptions(TIME_FLAGS),
    ...CONNECTION_OPTIONS,
  };
}

export const netCommands: Command[] = [
  {
    name: 'list',
    usage: 'list',
    summary: 'List the virtual networks: name, kind, host adapter, DHCP on or off, and how many adapters are connected.',
    positionals: { min: 0, max: 0 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const networks = await listNetworks(clientFor(args.values));
      print(args, networks, () => {
        if (networks.length === 0) console.log('no virtual networks');
        else printTable(['NAME', 'KIND', 'HOST ADAPTER', 'DHCP', 'ADAPTERS', 'ID'], networks.map((n) => [n.name, n.kind, n.hostAdapter ?? '-', n.dhcp ? 'on' : 'off', String(n.adapters), n.id]));
      });
      return 0;
    },
  },
  {
    name: 'show',
    usage: 'show NAME|ID',
    summary: 'Show one virtual network: its settings, its DHCP server, the adapters connected to it and its counters.',
    positionals: { min: 1, max: 1 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const network = await showNetwork(client, await resolveNetwork(client, args.positionals[0]));
      print(args, network, () => printNetwork(network));
      return 0;
    },
  },
  {
    name: 'create',
    usage: 'create NAME --kind KIND [--host-adapter IF]',
    summary: 'Create a virtual network: internal (guests only), host (bridged to --host-adapter) or nat (the host is the gateway).',
    details: 'It gets the first free 10.237.N.0/24 for its DHCP server, which is on for nat and off otherwise ("vsctl net dhcp" changes it).',
    positionals: { min: 1, max: 1 },
    options: { [KIND_FLAG.flag]: optionOf(KIND_FLAG), [HOST_ADAPTER_FLAG.flag]: optionOf(HOST_ADAPTER_FLAG), ...CONNECTION_OPTIONS },
    async run(args) {
      const [name] = args.positionals;
      if (typeof args.values.kind !== 'string') throw new UsageError(`--kind is needed: one of ${fieldFor(KIND_FLAG).choices?.join(', ') ?? ''}`);
      const params: Params = { name, kind: flagValue(KIND_FLAG, args.values.kind) };
      if (typeof args.values['host-adapter'] === 'string') params.hostAdapter = flagValue(HOST_ADAPTER_FLAG, args.values['host-adapter']);
      const client = clientFor(args.values);
      const network = refOf(await client.call(CREATE, params), 'CreateVirtualNetwork');
      const shown = await showNetwork(client, network);
      print(args, shown, () => console.log(`created ${String(shown.kind)} network ${name} (${network}), DHCP ${(shown.dhcp as DhcpView).enabled ? 'on' : 'off'}`));
      return 0;
    },
  },
  {
    name: 'delete',
    usage: 'delete NAME|ID [--keep-file]',
    summary: 'Delete a virtual network and its .vnc; refused (VM_E_NETWORK_IN_USE) while adapters are connected to it. --keep-file only unregisters it.',
    positionals: { min: 1, max: 1 },
    options: {
      'keep-file': { type: 'boolean', description: 'unregister the network and keep its .vnc (RegisterVirtualNetwork adds it back)' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const client = clientFor(args.values);
      const [text] = args.positionals;
      const network = await resolveNetwork(client, text);
      const keep = args.values['keep-file'] === true;
      const file = keep ? await client.call('VirtualNetwork.get_File', { this: network }) : null;
      try {
        await client.call(keep ? 'VirtualServer.UnregisterVirtualNetwork' : 'VirtualServer.DeleteVirtualNetwork', { network });
      } catch (e) {
        // The server names the adapters in the way; say how to disconnect one.
        if (e instanceof ApiCallError && e.name === 'VM_E_NETWORK_IN_USE') e.message = `${e.message} ("vsctl vm nic detach VM INDEX" disconnects one)`;
        throw e;
      }
      print(args, { network, deleted: !keep, unregistered: true, ...(keep ? { file } : {}) },
        () => console.log(keep ? `unregistered ${text}; its .vnc is kept (${String(file)})` : `deleted ${text}`));
      return 0;
    },
  },
  {
    name: 'dhcp',
    usage: 'dhcp NAME|ID [--enable|--disable] [--network A --mask M --start A --end A --server A --gateway A --dns A,B --wins A,B] [--lease S --renewal S --rebinding S]',
    summary: 'Show or change a network\'s DHCP server: on or off, its addresses, the servers it offers and its lease times.',
    details: [
      'Without options it shows the settings. Options not given keep their present values; the server checks the whole',
      'set (VM_E_DHCP_INVALID names each problem, VM_E_DHCP_OVERLAP the network in the way) and changes nothing when it refuses.',
    ].join('\n'),
    positionals: { min: 1, max: 1 },
    options: dhcpOptions(),
    async run(args) {
      if (args.values.enable && args.values.disable) throw new UsageError('--enable and --disable: give one');
      const addresses = given(args, ADDRESS_FLAGS);
      const times = given(args, TIME_FLAGS);
      const client = clientFor(args.values);
      const network = await resolveNetwork(client, args.positionals[0]);
      const dhcp = refOf(await client.call('VirtualNetwork.get_DHCPVirtualNetworkServer', { this: network }), 'get_DHCPVirtualNetworkServer');
      if (args.values.disable) await client.call('DHCPVirtualNetworkServer.put_IsEnabled', { this: dhcp, value: false });
      await configureDhcp(client, dhcp, addresses, times);
      if (args.values.enable) await client.call('DHCPVirtualNetworkServer.put_IsEnabled', { this: dhcp, value: true });
      const settings = await readDhcp(client, dhcp);
      print(args, { network, ...settings }, () => printRows(dhcpRows(settings)));
      return 0;
    },
  },
  {
    name: 'leases',
    usage: 'leases NAME|ID',
    summary: 'List the addresses the network\'s DHCP server has leased: MAC address, IP address, host name, expiry.',
    positionals: { min: 1, max: 1 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const network = await resolveNetwork(client, args.positionals[0]);
      const dhcp = refOf(await client.call('VirtualNetwork.get_DHCPVirtualNetworkServer', { this: network }), 'get_DHCPVirtualNetworkServer');
      const leases = await client.call<Array<{ mac: string; address: string; hostname: string | null; expires: string }>>('DHCPVirtualNetworkServer.get_Leases', { this: dhcp });
      print(args, leases, () => {
        if (leases.length === 0) console.log('no leases');
        else printTable(['MAC', 'ADDRESS', 'HOST NAME', 'EXPIRES'], leases.map((l) => [l.mac, l.address, l.hostname || '-', l.expires]));
      });
      return 0;
    },
  },
];

// ---------------------------------------------------------------------------------------------
// vm nic attach|detach

export const nicCommand: Command = {
  name: 'nic',
  usage: 'nic attach VM INDEX NETWORK | nic detach VM INDEX',
  summary: 'Connect a VM\'s network adapter to a virtual network, or disconnect it; also while the VM runs.',
  details: 'INDEX counts the VM\'s adapters from 0, in the order "vsctl vm show" lists them. NETWORK is a name, an id or a reference.',
  positionals: { min: 3, max: 4 },
  options: { ...CONNECTION_OPTIONS },
  async run(args) {
    const [verb, vmText, indexText, networkText] = args.positionals;
    if (verb !== 'attach' && verb !== 'detach') throw new UsageError(`vm nic: "${verb}" is not attach or detach`);
    if (verb === 'attach' && networkText === undefined) throw new UsageError('usage: vsctl vm nic attach VM INDEX NETWORK');
    if (verb === 'detach' && networkText !== undefined) throw new UsageError('usage: vsctl vm nic detach VM INDEX');
    const index = parseCount(indexText, 'INDEX');
    const client = clientFor(args.values);
    const vm = await resolveVm(client, vmText);
    const adapter = `NetworkAdapter/${idOf(vm)}/${index}`;
    if (verb === 'attach') {
      const network = await resolveNetwork(client, networkText);
      await client.call('NetworkAdapter.AttachToVirtualNetwork', { this: adapter, network });
    } else {
      await client.call('NetworkAdapter.DetachFromVirtualNetwork', { this: adapter });
    }
    const connected = await client.call('NetworkAdapter.get_VirtualNetwork', { this: adapter });
    const network = isRef(connected) ? connected.$ref : null;
    const name = network ? await client.call<string>('VirtualNetwork.get_Name', { this: network }) : null;
    print(args, { adapter, network, networkName: name }, () => console.log(network ? `${vmText} adapter ${index} is connected to ${name ?? network}` : `${vmText} adapter ${index} is not connected`));
    return 0;
  },
};
