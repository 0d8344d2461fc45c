// Scenarios (docs/cluster-test.md): a JSON file naming the cluster to build, its HA VMs and the
// faults to inject one after another. Read once, checked whole: a bad file is refused by name
// with what is wrong, before anything is built.

import fs from 'node:fs';
import path from 'node:path';
import { HarnessError } from './namespaces.js';

export const FAULT_KINDS = ['host-kill', 'link-cut', 'one-way-partition', 'host-freeze', 'etcd-leader-kill', 'etcd-quorum-loss', 'vserverd-kill'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Which host a fault hits: the host running the first VM now, or one named. */
export type FaultTarget = 'vm-host' | string;

export interface FaultStep {
  fault: FaultKind;
  target: FaultTarget;
  repeat: number;
  /** How long the fault lasts before it is undone (freeze, cut, partition, quorum loss). */
  holdSeconds: number;
  /** The longest the harness waits for the VM to run again (or, when nothing may move, watches). */
  timeoutSeconds: number;
}

export interface Scenario {
  name: string;
  description: string;
  hosts: number;
  vms: Array<{ name: string; memoryMB: number; dataDiskMB: number }>;
  /** Seconds to let the guest write records before each fault. */
  settleSeconds: number;
  faults: FaultStep[];
}

export class ScenarioError extends HarnessError {}

export const BUNDLED_DIR = path.resolve(import.meta.dirname, '..', '..', 'harness', 'scenarios');

/** A bundled scenario by name ("short", "each", "full"), or a file path. */
export function loadScenario(nameOrPath: string): Scenario {
  const file = /^[a-z0-9-]+$/.test(nameOrPath) ? path.join(BUNDLED_DIR, `${nameOrPath}.json`) : path.resolve(nameOrPath);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ScenarioError(`scenario ${nameOrPath}: cannot read ${file}: ${(e as Error).message}`);
  }
  return parseScenario(raw, file);
}

function fail(file: string, what: string): never {
  throw new ScenarioError(`scenario ${file}: ${what}`);
}

function int(file: string, value: unknown, what: string, min: number, max: number, fallback?: number): number {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) fail(file, `${what} must be a whole number from ${min} to ${max}, not ${JSON.stringify(value)}`);
  return value;
}

export function parseScenario(raw: unknown, file: string): Scenario {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  const known = ['name', 'description', 'hosts', 'vms', 'settleSeconds', 'faults'];
  for (const key of Object.keys(o)) if (!known.includes(key)) fail(file, `unknown key "${key}" (known: ${known.join(', ')})`);
  if (typeof o.name !== 'string' || !/^[A-Za-z0-9_-]{1,40}$/.test(o.name)) fail(file, '"name" must be 1 to 40 letters, digits, - or _');
  const hosts = int(file, o.hosts, '"hosts"', 2, 9);
  if (!Array.isArray(o.vms) || o.vms.length < 1 || o.vms.length > 4) fail(file, '"vms" must list 1 to 4 VMs');
  const vms = o.vms.map((v: unknown, i) => {
    const vm = (v ?? {}) as Record<string, unknown>;
    if (typeof vm.name !== 'string' || !/^[a-z][a-z0-9-]{0,20}$/.test(vm.name)) fail(file, `vms[${i}].name must be lower-case letters, digits and -`);
    return { name: vm.name, memoryMB: int(file, vm.memoryMB, `vms[${i}].memoryMB`, 64, 256, 128), dataDiskMB: int(file, vm.dataDiskMB, `vms[${i}].dataDiskMB`, 16, 1024, 64) };
  });
  if (!Array.isArray(o.faults) || o.faults.length < 1) fail(file, '"faults" must list at least one fault');
  const faults = o.faults.map((f: unknown, i): FaultStep => {
    const step = (f ?? {}) as Record<string, unknown>;
    if (!FAULT_KINDS.includes(step.fault as FaultKind)) fail(file, `faults[${i}].fault must be one of ${FAULT_KINDS.join(', ')}, not ${JSON.stringify(step.fault)}`);
    const target = step.target ?? 'vm-host';
    if (typeof target !== 'string' || (target !== 'vm-host' && !/^h[1-9]$/.test(target))) fail(file, `faults[${i}].target must be "vm-host" or a host name h1..h${hosts}`);
    if (target !== 'vm-host' && Number(target.slice(1)) > hosts) fail(file, `faults[${i}].target ${target}: the cluster has ${hosts} hosts`);
    return {
      fault: step.fault as FaultKind, target, repeat: int(file, step.repeat, `faults[${i}].repeat`, 1, 1000, 1),
      holdSeconds: int(file, step.holdSeconds, `faults[${i}].holdSeconds`, 1, 600, 12), timeoutSeconds: int(file, step.timeoutSeconds, `faults[${i}].timeoutSeconds`, 5, 900, 90),
    };
  });
  return {
    name: o.name, description: typeof o.description === 'string' ? o.description : '', hosts, vms,
    settleSeconds: int(file, o.settleSeconds, '"settleSeconds"', 0, 600, 5), faults,
  };
}

/** The faults in the order they run, each repeat its own entry. */
export function expandFaults(scenario: Scenario): FaultStep[] {
  return scenario.faults.flatMap((f) => Array.from({ length: f.repeat }, () => f));
}
