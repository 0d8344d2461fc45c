// The virtual networks: their catalog rows and their .vnc files. As with VMs, the row is the
// truth and the .vnc its copy: every change writes the row, then the file (a failed write puts the
// row back), and each start rewrites a .vnc that does not hold its row.

import fs from 'node:fs';
import path from 'node:path';
import { FILE_NAME_RULE, isFileName } from '../vmm/config.js';
import { type Catalog, prepared } from './catalog/database.js';
import { ApiError, invalidParams } from './errors.js';
import type { NetworkKind, NetworkRecord } from './network-record.js';
import type { DhcpSettings } from './network/dhcp-settings.js';
import { readVnc, type VncContent, vncHolds, writeVnc } from './vnc-file.js';

interface NetworkRow { id: string; name: string; kind: NetworkKind; host_adapter: string | null; notes: string; dhcp: string; vnc_path: string; created: string }

export type NetworkChange = Partial<Pick<NetworkRecord, 'name' | 'notes' | 'hostAdapter' | 'dhcp'>>;

export class NetworkRepository {
  private readonly records = new Map<string, NetworkRecord>();

  /** `folder`: where new networks' .vnc files go (the data folder's "networks"). */
  constructor(private readonly db: Catalog, private readonly folder: string) {
    for (const row of prepared(db, 'SELECT * FROM networks').all() as NetworkRow[]) this.records.set(row.id, fromRow(row));
  }

  list(): NetworkRecord[] {
    return [...this.records.values()].sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
  }

  get(id: string): NetworkRecord | null {
    return this.records.get(id) ?? null;
  }

  require(id: string): NetworkRecord {
    const network = this.get(id);
    if (!network) throw new ApiError('VM_E_NETWORK_UNKNOWN', `there is no virtual network with id ${id}`);
    return network;
  }

  /** Names are unique regardless of case, as the catalog's column says. */
  findByName(name: string): NetworkRecord | null {
    const wanted = name.trim().toLowerCase();
    return this.list().find((n) => n.name.toLowerCase() === wanted) ?? null;
  }

  async create(content: Omit<VncContent, 'id'>): Promise<NetworkRecord> {
    const name = this.checkName(content.name);
    const network = { ...content, name, id: globalThis.crypto.randomUUID() };
    const vncPath = path.join(this.folder, `${name}.vnc`);
    await fs.promises.mkdir(this.folder, { recursive: true });
    this.checkName(name);
    this.insertRow(network, vncPath);
    try {
      await writeVnc(vncPath, network);
    } catch (e) {
      this.deleteRow(network.id);
      throw new ApiError('VM_E_NETWORK_FAILED', `cannot write ${vncPath}: ${(e as Error).message}`);
    }
    return this.require(network.id);
  }

  /** Adds a network from its .vnc, as this host or another wrote it; the file is left as it is. */
  async register(vncPath: string): Promise<NetworkRecord> {
    const network = await readVnc(vncPath);
    const existing = this.get(network.id);
    if (existing) throw new ApiError('VM_E_NETWORK_REGISTERED', `${vncPath} is the network ${existing.name}, which is already registered`);
    this.checkName(network.name);
    this.insertRow(network, vncPath);
    return this.require(network.id);
  }

  /** Removes the row; with deleteFile, the .vnc too. */
  async remove(id: string, deleteFile: boolean): Promise<NetworkRecord> {
    const network = this.require(id);
    this.deleteRow(id);
    if (deleteFile) await fs.promises.rm(network.vncPath, { force: true });
    return network;
  }

  /** Changes settings: the row, then the .vnc; a .vnc that cannot be written puts the row back. */
  async change(id: string, change: NetworkChange): Promise<NetworkRecord> {
    const before = this.require(id);
    const name = change.name === undefined ? before.name : this.checkName(change.name, id);
    const after: NetworkRecord = { ...before, ...change, name };
    this.updateRow(after);
    try {
      await writeVnc(after.vncPath, after);
    } catch (e) {
      this.updateRow(before);
      throw new ApiError('VM_E_NETWORK_FAILED', `cannot write ${after.vncPath}: ${(e as Error).message}`);
    }
    return this.require(id);
  }

  /** At start: every .vnc holds its row again; returns the files rewritten. */
  async repairVncFiles(): Promise<string[]> {
    const rewritten: string[] = [];
    for (const network of this.list()) {
      if (await vncHolds(network.vncPath, network)) continue;
      await fs.promises.mkdir(path.dirname(network.vncPath), { recursive: true });
      await writeVnc(network.vncPath, network);
      rewritten.push(network.vncPath);
    }
    return rewritten;
  }

  /** A value of vserverd's own settings table ("what a first start did"). */
  setting(key: string): string | null {
    return (prepared(this.db, 'SELECT value FROM settings WHERE key = ?').get(key) as { value: string } | undefined)?.value ?? null;
  }

  setSetting(key: string, value: string): void {
    prepared(this.db, 'INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  private checkName(input: string, self?: string): string {
    const name = input.trim();
    if (!isFileName(name)) throw invalidParams(`"${input}" is not a network name: ${FILE_NAME_RULE}`, { param: 'name' });
    const other = this.findByName(name);
    if (other && other.id !== self) throw new ApiError('VM_E_NETWORK_NAME_IN_USE', `a virtual network named ${other.name} already exists`);
    return name;
  }

  private insertRow(network: VncContent, vncPath: string): void {
    prepared(this.db, 'INSERT INTO networks (id, name, kind, host_adapter, notes, dhcp, vnc_path, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(network.id, network.name, network.kind, network.hostAdapter, network.notes, JSON.stringify(network.dhcp), vncPath, new Date().toISOString());
    this.reload(network.id);
  }

  private updateRow(network: NetworkRecord): void {
    prepared(this.db, 'UPDATE networks SET name = ?, host_adapter = ?, notes = ?, dhcp = ? WHERE id = ?')
      .run(network.name, network.hostAdapter, network.notes, JSON.stringify(network.dhcp), network.id);
    this.reload(network.id);
  }

  private deleteRow(id: string): void {
    prepared(this.db, 'DELETE FROM networks WHERE id = ?').run(id);
    this.records.delete(id);
  }

  private reload(id: string): void {
    const row = prepared(this.db, 'SELECT * FROM networks WHERE id = ?').get(id) as NetworkRow | undefined;
    if (row) this.records.set(id, fromRow(row));
    else this.records.delete(id);
  }
}

function fromRow(row: NetworkRow): NetworkRecord {
  return {
    id: row.id, name: row.name, kind: row.kind, hostAdapter: row.host_adapter, notes: row.notes,
    dhcp: JSON.parse(row.dhcp) as DhcpSettings, vncPath: row.vnc_path, created: row.created,
  };
}
