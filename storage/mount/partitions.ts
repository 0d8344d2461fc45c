// Reading a disk's partition table (MBR with logical partitions, or GPT) from its first
// sectors. vhdmount needs partition offsets itself: the loop driver on hosts like ours
// creates no partition nodes.

const SECTOR = 512;
const MBR_SIGNATURE = 0xaa55;
const GPT_PROTECTIVE = 0xee;
const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);
const GPT_SIGNATURE = 'EFI PART';
/** An extended partition's chain of logical partitions is cut off here (a loop, or damage). */
const MAX_LOGICAL = 128;

export interface Partition {
  /** 1-4 for MBR primaries, 5 and up for MBR logical partitions, the entry's index + 1 for GPT. */
  number: number;
  offset: number;
  size: number;
  /** MBR type byte as hex ("83") or the GPT type GUID. */
  type: string;
  name?: string;
}

export interface PartitionTable {
  scheme: 'mbr' | 'gpt' | 'none';
  partitions: Partition[];
}

export class PartitionTableError extends Error {}

/** Reads `length` bytes at `offset` of the disk. */
export type ReadAt = (offset: number, length: number) => Buffer;

export function readPartitionTable(read: ReadAt, diskSize: number): PartitionTable {
  if (diskSize < SECTOR) return { scheme: 'none', partitions: [] };
  const mbr = read(0, SECTOR);
  if (mbr.readUInt16LE(510) !== MBR_SIGNATURE) return { scheme: 'none', partitions: [] };
  const entries = [0, 1, 2, 3].map((i) => mbrEntry(mbr, i));
  if (entries.some((e) => e.type === GPT_PROTECTIVE)) return { scheme: 'gpt', partitions: readGpt(read, diskSize) };
  // A boot sector without a table (a filesystem's own, say) has no sane entries; treat it as a whole disk.
  if (entries.every((e) => e.type === 0) || entries.some((e) => e.type !== 0 && e.status !== 0 && e.status !== 0x80)) {
    return { scheme: 'none', partitions: [] };
  }
  const partitions: Partition[] = [];
  entries.forEach((e, i) => {
    if (e.type === 0 || e.sectors === 0) return;
    if (EXTENDED_TYPES.has(e.type)) {
      partitions.push(...readLogical(read, diskSize, e.lba));
      return;
    }
    partitions.push(checked({ number: i + 1, offset: e.lba * SECTOR, size: e.sectors * SECTOR, type: hex(e.type) }, diskSize));
  });
  return { scheme: 'mbr', partitions: partitions.sort((a, b) => a.number - b.number) };
}

function mbrEntry(sector: Buffer, index: number): { status: number; type: number; lba: number; sectors: number } {
  const at = 446 + 16 * index;
  return { status: sector[at], type: sector[at + 4], lba: sector.readUInt32LE(at + 8), sectors: sector.readUInt32LE(at + 12) };
}

/** Logical partitions: a chain of extended boot records, each holding one partition and a link to the next. */
function readLogical(read: ReadAt, diskSize: number, extendedStart: number): Partition[] {
  const found: Partition[] = [];
  let ebr = extendedStart;
  for (let n = 5; n < 5 + MAX_LOGICAL; n++) {
    if ((ebr + 1) * SECTOR > diskSize) throw new PartitionTableError(`extended boot record at sector ${ebr} lies past the end of the disk`);
    const sector = read(ebr * SECTOR, SECTOR);
    if (sector.readUInt16LE(510) !== MBR_SIGNATURE) throw new PartitionTableError(`extended boot record at sector ${ebr} has no signature`);
    const own = mbrEntry(sector, 0);
    const next = mbrEntry(sector, 1);
    if (own.type !== 0 && own.sectors !== 0) {
      found.push(checked({ number: n, offset: (ebr + own.lba) * SECTOR, size: own.sectors * SECTOR, type: hex(own.type) }, diskSize));
    }
    if (next.type === 0 || next.sectors === 0) return found;
    ebr = extendedStart + next.lba;
  }
  throw new PartitionTableError(`more than ${MAX_LOGICAL} logical partitions (a loop in the extended partition chain?)`);
}

function readGpt(read: ReadAt, diskSize: number): Partition[] {
  const header = read(SECTOR, SECTOR);
  if (header.toString('latin1', 0, 8) !== GPT_SIGNATURE) throw new PartitionTableError('protective MBR found but no GPT header at sector 1');
  const entriesLba = Number(header.readBigUInt64LE(72));
  const count = header.readUInt32LE(80);
  const entrySize = header.readUInt32LE(84);
  if (entrySize < 128 || entrySize > 4096 || count > 16384) throw new PartitionTableError(`GPT header has an implausible table (${count} entries of ${entrySize} bytes)`);
  const bytes = count * entrySize;
  if (entriesLba * SECTOR + bytes > diskSize) throw new PartitionTableError('GPT partition entries lie past the end of the disk');
  const table = read(entriesLba * SECTOR, Math.ceil(bytes / SECTOR) * SECTOR);
  const partitions: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const entry = table.subarray(i * entrySize, (i + 1) * entrySize);
    if (entry.subarray(0, 16).every((b) => b === 0)) continue;
    const first = Number(entry.readBigUInt64LE(32));
    const last = Number(entry.readBigUInt64LE(40));
    if (last < first) throw new PartitionTableError(`GPT entry ${i + 1} ends (sector ${last}) before it starts (sector ${first})`);
    const name = entry.toString('utf16le', 56, 128).replace(/\0.*$/s, '');
    partitions.push(checked({ number: i + 1, offset: first * SECTOR, size: (last - first + 1) * SECTOR, type: guid(entry.subarray(0, 16)), name }, diskSize));
  }
  return partitions;
}

function checked(p: Partition, diskSize: number): Partition {
  if (p.offset + p.size > diskSize) {
    throw new PartitionTableError(`partition ${p.number} (${p.size} bytes at offset ${p.offset}) runs past the end of the disk (${diskSize} bytes)`);
  }
  return p;
}

function hex(type: number): string {
  return type.toString(16).padStart(2, '0');
}

/** A GPT GUID in its usual text form: the first three fields are little-endian. */
function guid(b: Buffer): string {
  const h = (start: number, end: number, reverse: boolean): string => {
    const part = Buffer.from(b.subarray(start, end));
    return (reverse ? part.reverse() : part).toString('hex');
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`.toUpperCase();
}
