// A virtual network's .vnc file: its settings as JSON, written beside the catalog so that
// another host (or this one, after the catalog is lost) can register the same network. It is
// replaced whole and durably, as a VM's .vmc is (host/files.ts).

import fs from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { writeFileDurably } from '../host/files.js';
import { draftOf } from '../storage/drafts.js';
import { FILE_NAME_RULE, isFileName, UUID } from '../vmm/config.js';
import { ApiError } from './errors.js';
import { assertDhcp, type DhcpSettings } from './network/dhcp-settings.js';
import { NETWORK_KINDS, type NetworkKind, type NetworkRecord } from './network-record.js';

const FORMAT = 'vserver-network';
const VERSION = 1;

/** What a .vnc holds: the network, without what is this host's (the file's own path, when it was registered). */
export type VncContent = Pick<NetworkRecord, 'id' | 'name' | 'kind' | 'hostAdapter' | 'notes' | 'dhcp'>;

function vncText(network: VncContent): string {
  const { id, name, kind, hostAdapter, notes, dhcp } = network;
  return `${JSON.stringify({ format: FORMAT, version: VERSION, id, name, kind, hostAdapter, notes, dhcp }, null, 2)}\n`;
}

export function writeVnc(file: string, network: VncContent): Promise<void> {
  return writeFileDurably(file, vncText(network), { draft: draftOf(file) });
}

/** Reads a .vnc; VM_E_NETWORK_FILE_INVALID names the field at fault, VM_E_DHCP_INVALID the DHCP settings'. */
export async function readVnc(file: string): Promise<VncContent> {
  let doc: unknown;
  try {
    doc = JSON.parse(await fs.promises.readFile(file, 'utf8'));
  } catch (e) {
    throw invalid(file, `it is not JSON (${(e as Error).message})`);
  }
  if (!isObject(doc) || doc.format !== FORMAT) throw invalid(file, `"format" is not "${FORMAT}"`);
  if (doc.version !== VERSION) throw invalid(file, `format version ${String(doc.version)} is not supported (this is version ${VERSION})`);
  if (typeof doc.id !== 'string' || !UUID.test(doc.id)) throw invalid(file, '"id" is not a UUID');
  if (typeof doc.name !== 'string' || !isFileName(doc.name)) throw invalid(file, `"name": ${FILE_NAME_RULE}`);
  if (!NETWORK_KINDS.includes(doc.kind as NetworkKind)) throw invalid(file, `"kind" is one of ${NETWORK_KINDS.join(', ')}`);
  if (doc.hostAdapter !== null && typeof doc.hostAdapter !== 'string') throw invalid(file, '"hostAdapter" is an interface name or null');
  if (typeof doc.notes !== 'string') throw invalid(file, '"notes" is a string');
  if (!isObject(doc.dhcp)) throw invalid(file, '"dhcp" is an object');
  const dhcp = doc.dhcp as unknown as DhcpSettings;
  assertDhcp(dhcp);
  return { id: doc.id.toLowerCase(), name: doc.name, kind: doc.kind as NetworkKind, hostAdapter: doc.hostAdapter, notes: doc.notes, dhcp };
}

/** Whether `file` holds `network` as it would be read back. */
export async function vncHolds(file: string, network: VncContent): Promise<boolean> {
  try {
    const read = await readVnc(file);
    return isDeepStrictEqual(read, { id: network.id, name: network.name, kind: network.kind, hostAdapter: network.hostAdapter, notes: network.notes, dhcp: network.dhcp });
  } catch {
    return false;
  }
}

function invalid(file: string, why: string): ApiError {
  return new ApiError('VM_E_NETWORK_FILE_INVALID', `${file} is not a virtual network file: ${why}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
