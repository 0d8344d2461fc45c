// A virtual network's DHCP server settings (issue 15's contract): the type, the defaults, IPv4
// arithmetic and the checks. Pure: no host is asked anything here.

import { ApiError } from '../errors.js';

/** internal: guests only (Virtual Server's "None (Guest Only)"); host: bridged to a host interface; nat: the host routes and masquerades. */
export const NETWORK_KINDS = ['internal', 'host', 'nat'] as const;
export type NetworkKind = (typeof NETWORK_KINDS)[number];

export interface DhcpSettings {
  enabled: boolean;
  networkAddress: string;
  networkMask: string;
  startingAddress: string;
  endingAddress: string;
  /** The host holds it on the bridge while DHCP is on; a nat network's gateway by default. */
  serverAddress: string;
  defaultGateway: string | null;
  dnsServers: string[];
  winsServers: string[];
  /** Seconds. */
  leaseTime: number;
  renewalTime: number;
  rebindingTime: number;
}

export interface DhcpProblem { field: string; message: string }

/** Lease times' minimums, in seconds. */
export const MIN_LEASE_TIME = 60;
export const MIN_RENEWAL_TIME = 30;
export const MIN_REBINDING_TIME = 45;
/** The shortest and longest network prefixes: a range and a server need room; larger than a /8 is no LAN. */
export const MIN_PREFIX = 8;
export const MAX_PREFIX = 30;
/** New networks take the first free 10.237.N.0/24. */
const DEFAULT_FIRST_OCTETS = [10, 237] as const;

const DEFAULT_TIMES = { leaseTime: 86_400, renewalTime: 43_200, rebindingTime: 75_600 };

/** An IPv4 address as a 32-bit unsigned number, or null when `text` is not a dotted quad (no leading zeros). */
export function parseIpv4(text: string): number | null {
  if (typeof text !== 'string') return null;
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((part) => /^(0|[1-9]\d{0,2})$/.test(part) && Number(part) <= 255)) return null;
  return parts.reduce((value, part) => value * 256 + Number(part), 0);
}

export function formatIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

/** A mask's prefix length, or null when its one bits are not contiguous (255.0.255.0). */
export function maskPrefix(mask: string): number | null {
  const value = parseIpv4(mask);
  if (value === null) return null;
  const bits = value.toString(2).padStart(32, '0');
  return /^1*0*$/.test(bits) ? bits.indexOf('0') === -1 ? 32 : bits.indexOf('0') : null;
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** The network a settings object describes, as numbers: first and last address (the broadcast). */
function span(networkAddress: string, networkMask: string): { first: number; last: number } | null {
  const address = parseIpv4(networkAddress);
  const prefix = maskPrefix(networkMask);
  if (address === null || prefix === null) return null;
  const first = (address & maskOf(prefix)) >>> 0;
  return { first, last: first + 2 ** (32 - prefix) - 1 };
}

/** `address/prefix`, as ip(8) takes it. */
export function withPrefix(address: string, networkMask: string): string {
  return `${address}/${maskPrefix(networkMask)}`;
}

/** The network in CIDR form (10.237.0.0/24). */
export function subnet(settings: Pick<DhcpSettings, 'networkAddress' | 'networkMask'>): string {
  return withPrefix(settings.networkAddress, settings.networkMask);
}

/** Whether two networks share any address. */
export function overlapping(a: Pick<DhcpSettings, 'networkAddress' | 'networkMask'>, b: Pick<DhcpSettings, 'networkAddress' | 'networkMask'>): boolean {
  const one = span(a.networkAddress, a.networkMask);
  const other = span(b.networkAddress, b.networkMask);
  return one !== null && other !== null && one.first <= other.last && other.first <= one.last;
}

/** The address a nat network's guests route through: the gateway if set, else the server. */
export function gatewayOf(settings: DhcpSettings): string {
  return settings.defaultGateway ?? settings.serverAddress;
}

/**
 * A new network's settings: the first 10.237.N.0/24 that overlaps none of `taken`, DHCP on only
 * for nat (whose gateway is the server address).
 */
export function defaultDhcp(kind: NetworkKind, taken: Pick<DhcpSettings, 'networkAddress' | 'networkMask'>[]): DhcpSettings {
  const [a, b] = DEFAULT_FIRST_OCTETS;
  for (let n = 0; n <= 255; n++) {
    const networkAddress = `${a}.${b}.${n}.0`;
    const candidate = { networkAddress, networkMask: '255.255.255.0' };
    if (taken.some((other) => overlapping(candidate, other))) continue;
    const serverAddress = `${a}.${b}.${n}.1`;
    return {
      enabled: kind === 'nat',
      ...candidate,
      startingAddress: `${a}.${b}.${n}.16`,
      endingAddress: `${a}.${b}.${n}.254`,
      serverAddress,
      defaultGateway: kind === 'nat' ? serverAddress : null,
      dnsServers: [],
      winsServers: [],
      ...DEFAULT_TIMES,
    };
  }
  throw new ApiError('VM_E_DHCP_OVERLAP', `every network ${a}.${b}.N.0/24 is taken by another virtual network`);
}

/** Every problem of a settings object, by field (empty when it is valid). */
export function checkDhcp(settings: DhcpSettings): DhcpProblem[] {
  const problems: DhcpProblem[] = [];
  const problem = (field: string, message: string): void => { problems.push({ field, message }); };
  const address = (field: string, value: string): number | null => {
    const parsed = parseIpv4(value);
    if (parsed === null) problem(field, `${JSON.stringify(value)} is not an IPv4 address`);
    return parsed;
  };

  const network = address('networkAddress', settings.networkAddress);
  const maskValue = address('networkMask', settings.networkMask);
  const prefix = maskValue === null ? null : maskPrefix(settings.networkMask);
  if (maskValue !== null && prefix === null) problem('networkMask', `${settings.networkMask} is not a mask: its one bits are not contiguous`);
  const prefixInRange = prefix !== null && prefix >= MIN_PREFIX && prefix <= MAX_PREFIX;
  if (prefix !== null && !prefixInRange) {
    problem('networkMask', `${settings.networkMask} (/${prefix}) is not between ${formatIpv4(maskOf(MIN_PREFIX))} and ${formatIpv4(maskOf(MAX_PREFIX))}`);
  }
  // Addresses are placed in the network only when it is one: a bad mask is one problem, not five.
  const bounds = network !== null && prefixInRange ? span(settings.networkAddress, settings.networkMask) : null;
  if (bounds && network !== bounds.first) problem('networkAddress', `${settings.networkAddress} has host bits set under the mask ${settings.networkMask} (the network is ${formatIpv4(bounds.first)})`);

  // A host address of the network: neither the network's own address nor its broadcast address.
  const inside = (field: string, value: string): number | null => {
    const parsed = address(field, value);
    if (parsed !== null && bounds && (parsed <= bounds.first || parsed >= bounds.last)) {
      problem(field, `${value} is not a host address of the network ${formatIpv4(bounds.first)}/${prefix}`);
    }
    return parsed;
  };
  const start = inside('startingAddress', settings.startingAddress);
  const end = inside('endingAddress', settings.endingAddress);
  const server = inside('serverAddress', settings.serverAddress);
  if (settings.defaultGateway !== null) inside('defaultGateway', settings.defaultGateway);
  if (start !== null && end !== null && start > end) problem('startingAddress', `the range is empty: ${settings.startingAddress} comes after ${settings.endingAddress}`);
  if (server !== null && start !== null && end !== null && start <= server && server <= end) {
    problem('serverAddress', `${settings.serverAddress} lies in the range ${settings.startingAddress}-${settings.endingAddress} it would hand out`);
  }
  settings.dnsServers.forEach((value, index) => address(`dnsServers[${index}]`, value));
  settings.winsServers.forEach((value, index) => address(`winsServers[${index}]`, value));

  const seconds = (field: 'leaseTime' | 'renewalTime' | 'rebindingTime', minimum: number): boolean => {
    const value = settings[field];
    if (!Number.isSafeInteger(value) || value < minimum) {
      problem(field, `${value} is not a whole number of seconds of at least ${minimum}`);
      return false;
    }
    return true;
  };
  const times = [seconds('leaseTime', MIN_LEASE_TIME), seconds('renewalTime', MIN_RENEWAL_TIME), seconds('rebindingTime', MIN_REBINDING_TIME)];
  if (times.every(Boolean)) {
    if (settings.renewalTime >= settings.rebindingTime) problem('renewalTime', `the renewal time (${settings.renewalTime} s) must be shorter than the rebinding time (${settings.rebindingTime} s)`);
    if (settings.rebindingTime >= settings.leaseTime) problem('rebindingTime', `the rebinding time (${settings.rebindingTime} s) must be shorter than the lease time (${settings.leaseTime} s)`);
  }
  return problems;
}

/** Throws VM_E_DHCP_INVALID, with every problem in `data.problems`, unless the settings are valid. */
export function assertDhcp(settings: DhcpSettings): void {
  const problems = checkDhcp(settings);
  if (problems.length > 0) {
    throw new ApiError('VM_E_DHCP_INVALID', `DHCP settings are not valid: ${problems.map((p) => `${p.field}: ${p.message}`).join('; ')}`, { problems });
  }
}
