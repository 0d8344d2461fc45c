// The vsctl verbs of the host cluster, through vserverd: "cluster status|hosts|history|test",
// "host maintenance on|off" and "vm ha". Any host of the cluster answers for the whole cluster;
// docs/cluster.md says what the states and settings mean.

import { ApiCallError, type ApiClient } from './api-client.js';
import { clientFor, CONNECTION_OPTIONS } from './api-call.js';
import { idOf, parseCount, print, printTable, refOf } from './api-output.js';
import { resolveVm } from './api-vm.js';
import type { Command } from './command.js';
import { printRows, UsageError } from './terminal.js';

interface Ref { $ref: string }
interface HostRow { host: Ref; name: string; address: string; state: string; memoryAvailableMB: number; virtualMachines: Ref[]; local: boolean }
interface Failover {
  id: string; vm: Ref; vmName: string; from: string; to: string | null; reason: string;
  detected: string; fenced: string | null; started: string | null; running: string | null; seconds: number | null; error: string | null;
}
interface HaSettings { enabled: boolean; priority: number; preferredHosts: string[]; maxRestarts: number }

/** The cluster the server belongs to, or VM_E_NOT_CLUSTERED as vserverd would say it. */
async function clusterRef(client: ApiClient): Promise<string> {
  const found = await client.call<Ref | null>('VirtualServer.get_Cluster');
  if (found === null) throw new ApiCallError('VM_E_NOT_CLUSTERED', `vserverd at ${client.url} is not in a cluster (it was started without cluster settings)`);
  return refOf(found, 'get_Cluster');
}

const hostsOf = (client: ApiClient, cluster: string): Promise<HostRow[]> => client.call<HostRow[]>('Cluster.get_Hosts', { this: cluster });

function printHosts(hosts: HostRow[]): void {
  printTable(['HOST', 'STATE', 'ADDRESS', 'FREE MB', 'VMS'],
    hosts.map((h) => [`${h.local ? '* ' : '  '}${h.name}`, h.state, h.address, String(h.memoryAvailableMB), String(h.virtualMachines.length)]));
}

/** "12 s" from a failover's seconds, or what it is still waiting for. */
function outcomeOf(f: Failover): string {
  if (f.error) return `failed: ${f.error}`;
  if (f.seconds !== null) return `${f.seconds} s`;
  return f.started ? 'starting' : f.fenced ? 'fenced' : 'detected';
}

/** The harness's entry point (harness/main.ts), loaded only when "cluster test" runs. */
type RunClusterTest = (argv: string[]) => Promise<number>;
async function loadHarness(): Promise<RunClusterTest> {
  const url = new URL('../../harness/main.js', import.meta.url);
  let loaded: { runClusterTest?: unknown };
  try {
    loaded = await import(url.href) as { runClusterTest?: unknown };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') throw new UsageError('this build has no failover test harness (harness/main.ts)');
    throw e;
  }
  if (typeof loaded.runClusterTest !== 'function') throw new UsageError('harness/main.ts exports no runClusterTest(argv)');
  return loaded.runClusterTest as RunClusterTest;
}

export const clusterCommands: Command[] = [
  {
    name: 'status',
    usage: 'status',
    summary: 'The cluster the server belongs to: its name, its leader, and how many hosts are in each state (or that the server runs alone).',
    positionals: { min: 0, max: 0 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const found = await client.call<Ref | null>('VirtualServer.get_Cluster');
      if (found === null) {
        print(args, { cluster: null }, () => console.log(`vserverd at ${client.url} runs alone (no cluster settings)`));
        return 0;
      }
      const cluster = refOf(found, 'get_Cluster');
      const [name, leader, hosts] = await client.batchAll([
        ['Cluster.get_Name', { this: cluster }], ['Cluster.get_Leader', { this: cluster }], ['Cluster.get_Hosts', { this: cluster }],
      ]) as [string, Ref | null, HostRow[]];
      const byState = new Map<string, number>();
      for (const h of hosts) byState.set(h.state, (byState.get(h.state) ?? 0) + 1);
      const counts = [...byState].map(([state, n]) => `${n} ${state}`);
      const local = hosts.find((h) => h.local);
      print(args, { cluster, name, leader: leader ? idOf(leader.$ref) : null, thisHost: local?.name ?? null, hosts }, () => printRows([
        ['cluster', name],
        ['leader', leader ? idOf(leader.$ref) : 'none (no quorum, or an election under way)'],
        ['this host', local ? `${local.name} (${local.state})` : 'unknown'],
        ['hosts', `${hosts.length}: ${counts.join(', ') || 'none'}`],
      ]));
      return 0;
    },
  },
  {
    name: 'hosts',
    usage: 'hosts',
    summary: 'Every host of the cluster with its state, address, free memory and VMs; * marks the host that answered.',
    positionals: { min: 0, max: 0 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const hosts = await hostsOf(client, await clusterRef(client));
      print(args, hosts, () => printHosts(hosts));
      return 0;
    },
  },
  {
    name: 'history',
    usage: 'history [--since TIME]',
    summary: 'The failovers, oldest first: when each was detected, the VM, the hosts it moved from and to, why, and how long it took.',
    details: 'With --json each failover has its whole timeline (detected, fenced, started, running, ISO 8601).',
    positionals: { min: 0, max: 0 },
    options: { since: { type: 'string', valueName: 'TIME', description: 'only failovers detected at or after TIME (ISO 8601, e.g. 2026-12-06T00:00Z)' }, ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const cluster = await clusterRef(client);
      const since = args.values.since;
      if (since !== undefined && Number.isNaN(Date.parse(String(since)))) throw new UsageError(`--since: "${String(since)}" is not an ISO 8601 time (for example 2026-12-06T00:00Z)`);
      const history = await client.call<Failover[]>('Cluster.get_FailoverHistory', { this: cluster, ...(since !== undefined ? { since } : {}) });
      print(args, history, () => {
        if (!history.length) console.log('no failovers');
        else printTable(['DETECTED', 'VM', 'FROM', 'TO', 'TOOK', 'REASON'], history.map((f) => [f.detected, f.vmName, f.from, f.to ?? '-', outcomeOf(f), f.reason]));
      });
      return 0;
    },
  },
  {
    name: 'test',
    usage: 'test SCENARIO [options]',
    summary: 'Run a failover test scenario on a cluster built on this machine (network namespaces, etcd, vserverd per host); "cluster test --help" lists its options.',
    details: 'The arguments go to the failover test harness as they are; docs/cluster.md describes the scenarios and their format.',
    positionals: { min: 0, max: Infinity },
    options: {},
    rawArgs: true,
    async run(args) {
      return (await loadHarness())(args.positionals);
    },
  },
];

export const hostCommands: Command[] = [
  {
    name: 'maintenance',
    usage: 'maintenance on|off [HOST]',
    summary: 'Put a host of the cluster in Maintenance (it takes no VMs; its running VMs go on) or take it out; HOST is the host vsctl talks to when left out.',
    positionals: { min: 1, max: 2 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const [onOff, named] = args.positionals;
      if (onOff !== 'on' && onOff !== 'off') throw new UsageError(`maintenance takes "on" or "off", not "${onOff}"`);
      const client = clientFor(args.values);
      const cluster = await clusterRef(client);
      const name = named ?? (await hostsOf(client, cluster)).find((h) => h.local)?.name;
      if (!name) throw new ApiCallError('VM_E_HOST_UNKNOWN', `vserverd at ${client.url} did not say which host it is; name the host`);
      const host = `Host/${name}`;
      await client.call(onOff === 'on' ? 'Host.EnterMaintenance' : 'Host.ExitMaintenance', { this: host });
      const state = await client.call<string>('Host.get_State', { this: host });
      print(args, { host: name, state }, () => console.log(`${name} is ${state}`));
      return 0;
    },
  },
];

export const haCommand: Command = {
  name: 'ha',
  usage: 'ha VM [--enable|--disable] [--priority N] [--prefer H1,H2] [--max-restarts N]',
  summary: 'Show or change the VM\'s high availability: whether it is restarted on another host when its host is Down, in which order, where first.',
  details: [
    'Without options it shows the settings. Options left out keep their value. --prefer "" prefers no host.',
    'Enabling it is refused (VM_E_NOT_SHARED_STORAGE) unless all the VM\'s files are on the cluster\'s shared storage.',
  ].join('\n'),
  positionals: { min: 1, max: 1 },
  options: {
    enable: { type: 'boolean', description: 'restart it on another host when its host is Down' },
    disable: { type: 'boolean', description: 'leave it where it is when its host is Down' },
    priority: { type: 'string', valueName: 'N', description: 'higher restarts first when several VMs fail over at once (0 to 100)' },
    prefer: { type: 'string', valueName: 'H1,H2', description: 'hosts tried first, in order' },
    'max-restarts': { type: 'string', valueName: 'N', description: 'restarts on the same host after its QEMU died before it is Failed (0 to 100)' },
    ...CONNECTION_OPTIONS,
  },
  async run(args) {
    const v = args.values;
    if (v.enable && v.disable) throw new UsageError('--enable and --disable do not go together');
    const change: Partial<HaSettings> = {};
    if (v.enable || v.disable) change.enabled = v.enable === true;
    if (v.priority !== undefined) change.priority = parseCount(v.priority, '--priority');
    if (v['max-restarts'] !== undefined) change.maxRestarts = parseCount(v['max-restarts'], '--max-restarts');
    if (v.prefer !== undefined) change.preferredHosts = String(v.prefer).split(',').map((h) => h.trim()).filter(Boolean);
    const client = clientFor(v);
    const vm = await resolveVm(client, args.positionals[0]);
    if (Object.keys(change).length) await client.call('VirtualMachine.put_HighAvailability', { this: vm, value: change });
    const [settings, host] = await client.batchAll([['VirtualMachine.get_HighAvailability', { this: vm }], ['VirtualMachine.get_Host', { this: vm }]]) as [HaSettings, Ref | null];
    print(args, { vm, ...settings, host: host ? idOf(host.$ref) : null }, () => printRows([
      ['high availability', settings.enabled ? 'enabled' : 'disabled'],
      ['priority', String(settings.priority)],
      ['preferred hosts', settings.preferredHosts.join(', ') || 'any'],
      ['max restarts', String(settings.maxRestarts)],
      ['host', host ? idOf(host.$ref) : 'unknown to the cluster'],
    ]));
    return 0;
  },
};
