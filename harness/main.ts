// `vsctl cluster test SCENARIO` and `npm run cluster-test`: the failover test harness
// (docs/cluster-test.md). Builds a cluster on this machine, runs the scenario, prints a table
// (or, with --json, one JSON document on stdout; progress goes to stderr), and removes
// everything it made, also on failure and on SIGINT/SIGTERM/SIGHUP.

import { parseArgs } from 'node:util';
import { HarnessError, removeLeftoverNamespaces } from './namespaces.js';
import { type Report, runScenario } from './runner.js';
import { loadScenario, type Scenario } from './scenario.js';
import { Cluster } from './topology.js';

export const CLUSTER_TEST_USAGE = `usage: cluster-test [SCENARIO | --short | --full] [--json] [--keep] [--no-network] [--topology-only]
  SCENARIO         a bundled scenario's name (short, each, full) or a scenario file (.json); --short by default
  --json           one JSON document on stdout: {scenario, hosts, faults: [...], invariantsHeld}
  --keep           keep the work folder (logs, etcd data, disks) and print its path
  --no-network     no host network or DHCP for the guests: their liveness is their records alone
  --topology-only  build the cluster (namespaces, bridge, etcd, vserverds), check it answers, tear it down
  --plain-servers  start vserverd without the cluster settings: checks the harness itself (topology, guest,
                   records, faults where nothing may move); no VM is made HA, so moving faults fail
  Needs root (network namespaces), /usr/bin/etcd, qemu-system-x86_64 and the built test guest.`;

/** Exit statuses: 0 every invariant held, 1 an invariant broke, 2 the harness could not run. */
export const EXIT_HELD = 0;
export const EXIT_BROKEN = 1;
export const EXIT_UNUSABLE = 2;

export function formatTable(report: Report): string {
  const rows = [['#', 'fault', 'host', 'detection s', 'failover s', 'double starts', 'records lost', 'ok']];
  report.faults.forEach((f, i) => rows.push([String(i + 1), f.fault, f.host, f.detectionSeconds?.toFixed(1) ?? '-', f.failoverSeconds?.toFixed(1) ?? '-',
    String(f.doubleStarts), String(f.recordsLost), f.ok ? 'yes' : 'NO']));
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const lines = rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd());
  const failovers = report.faults.map((f) => f.failoverSeconds).filter((s): s is number => s !== null).sort((a, b) => a - b);
  const p99 = failovers.length ? failovers[Math.min(failovers.length - 1, Math.ceil(failovers.length * 0.99) - 1)] : null;
  lines.push('', `scenario ${report.scenario}, ${report.hosts} hosts, ${report.faults.length} faults; failover p99 ${p99 ?? '-'} s; invariants ${report.invariantsHeld ? 'held' : 'BROKEN'}`);
  return lines.join('\n');
}

export async function runClusterTest(argv: string[]): Promise<number> {
  let values: { json?: boolean; keep?: boolean; short?: boolean; full?: boolean; 'no-network'?: boolean; 'topology-only'?: boolean; 'plain-servers'?: boolean; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: {
      json: { type: 'boolean' }, keep: { type: 'boolean' }, short: { type: 'boolean' }, full: { type: 'boolean' },
      'no-network': { type: 'boolean' }, 'topology-only': { type: 'boolean' }, 'plain-servers': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    } }));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${CLUSTER_TEST_USAGE}\n`);
    return EXIT_UNUSABLE;
  }
  if (values.help) {
    process.stdout.write(`${CLUSTER_TEST_USAGE}\n`);
    return EXIT_HELD;
  }
  const chosen = [...positionals, ...(values.short ? ['short'] : []), ...(values.full ? ['full'] : [])];
  if (chosen.length > 1) {
    process.stderr.write(`one scenario at a time (given: ${chosen.join(', ')})\n${CLUSTER_TEST_USAGE}\n`);
    return EXIT_UNUSABLE;
  }
  const log = (line: string): void => { process.stderr.write(`[cluster-test ${new Date().toISOString().slice(11, 19)}] ${line}\n`); };
  let scenario: Scenario;
  try {
    scenario = loadScenario(chosen[0] ?? 'short');
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return EXIT_UNUSABLE;
  }
  if (process.geteuid?.() !== 0) {
    process.stderr.write('the cluster test needs root: it makes network namespaces\n');
    return EXIT_UNUSABLE;
  }
  for (const name of removeLeftoverNamespaces()) log(`removed ${name}, left by a killed run`);

  let cluster: Cluster | null = null;
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: removing the cluster`);
    cluster?.destroy(values.keep);
    process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGHUP' ? 1 : 15));
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, onSignal);
  const onExit = (): void => cluster?.destroy(values.keep);
  process.on('exit', onExit);
  try {
    log(`scenario ${scenario.name}: ${scenario.hosts} hosts, ${scenario.vms.length} VMs, ${scenario.faults.reduce((n, f) => n + f.repeat, 0)} faults`);
    cluster = await Cluster.build(scenario.hosts, { clusterFlags: !values['plain-servers'] }, log);
    if (values.keep) log(`work folder: ${cluster.workDir}`);
    await cluster.startServers();
    log(`vserverd answers on ${cluster.hosts.map((h) => h.apiTarget).join(', ')}`);
    if (values['topology-only']) {
      if (values.json) process.stdout.write(`${JSON.stringify({ scenario: scenario.name, hosts: cluster.hosts.length, topology: 'ok' })}\n`);
      return EXIT_HELD;
    }
    const report = await runScenario(cluster, scenario, { log, network: !values['no-network'], clustered: !values['plain-servers'] });
    process.stdout.write(values.json ? `${JSON.stringify(report)}\n` : `${formatTable(report)}\n`);
    return report.invariantsHeld ? EXIT_HELD : EXIT_BROKEN;
  } catch (e) {
    log(`the harness could not run: ${e instanceof HarnessError ? e.message : (e as Error).stack ?? String(e)}`);
    return EXIT_UNUSABLE;
  } finally {
    cluster?.destroy(values.keep);
    process.off('exit', onExit);
    for (const s of signals) process.off(s, onSignal);
  }
}
