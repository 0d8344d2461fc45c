// One client connection: the fixed newstyle handshake, option haggling, then transmission.
// Writes, flushes, trims, zeroing and small reads take effect one at a time in arrival order
// (the engine is synchronous). Reads of ASYNC_READ_MIN or more do their file I/O in the
// thread pool and may be answered later, so they can see a write sent after them, as the
// protocol allows for requests in flight together. Pipelined requests are read and answered
// in batches without waiting for the client. A client that breaks the protocol in a
// way that leaves the stream unparseable is disconnected; anything else gets its error reply.

import type { Socket } from 'node:net';
import { VhdError } from '../vhd/errors.js';
import type { NbdExport } from './export.js';
import {
  BASE_ALLOCATION, BASE_ALLOCATION_ID, Command, CommandFlag, Errno, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, Info,
  MAX_OPTION, MAX_REQUEST, MAX_STRING, NBD_MAGIC, OPTION_REPLY_MAGIC, Option, OptionReply, REPLY_FLAG_DONE,
  REQUEST_HEADER_SIZE, REQUEST_MAGIC, ReplyType, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
} from './protocol.js';
import { ConnectionClosed, SocketReader } from './reader.js';

export interface ExportDirectory {
  /** The export called `name`; "" is the default export. */
  find(name: string): NbdExport | undefined;
  list(): NbdExport[];
}

/** The stream cannot be trusted any further; the connection is closed. */
export class ProtocolViolation extends Error {}

class RequestError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

const HANDSHAKE_TIMEOUT_MS = 30_000;
/** Buffered input past which the socket is paused, and unsent output past which serving waits. */
const INPUT_HIGH_WATER = MAX_REQUEST + 4 * 1024 * 1024;
const OUTPUT_HIGH_WATER = 64 * 1024 * 1024;
/** Replies queued between sends: a small reply costs far more memory queued than its bytes. */
const MAX_QUEUED_REPLIES = 4096;
const MAX_EXTENTS = 16 * 1024;
/** Reads this large run in the thread pool, overlapping the sending of earlier replies; smaller ones cost less done at once. */
const ASYNC_READ_MIN = 128 * 1024;
const MAX_ASYNC_READS = 8;

const ALLOWED_FLAGS: Record<number, number> = {
  [Command.READ]: CommandFlag.DF,
  [Command.WRITE]: CommandFlag.FUA,
  [Command.DISC]: 0,
  [Command.FLUSH]: 0,
  [Command.TRIM]: CommandFlag.FUA,
  [Command.WRITE_ZEROES]: CommandFlag.FUA | CommandFlag.NO_HOLE,
  [Command.BLOCK_STATUS]: CommandFlag.REQ_ONE,
};

export class NbdConnection {
  private readonly reader: SocketReader;
  private structured = false;
  private noZeroes = false;
  /** The export for which base:allocation was selected, if it was. */
  private metaContextExport: string | null = null;
  private readonly asyncReads = new Set<Promise<void>>();
  export: NbdExport | null = null;

  constructor(private readonly socket: Socket, private readonly exports: ExportDirectory, private readonly log: (line: string) => void) {
    this.reader = new SocketReader(socket, INPUT_HIGH_WATER);
    socket.on('error', () => { /* reported through the reader as a closed connection */ });
  }

  close(): void {
    this.socket.destroy();
  }

  async serve(): Promise<void> {
    try {
      this.socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => this.socket.destroy());
      if (await this.handshake()) {
        this.socket.setTimeout(0);
        await this.transmission();
      }
    } catch (e) {
      if (e instanceof ProtocolViolation) this.log(`closing connection: ${e.message}`);
      else if (!(e instanceof ConnectionClosed)) this.log(`closing connection after an internal error: ${(e as Error).stack ?? String(e)}`);
    } finally {
      this.socket.destroy();
    }
  }

  // ---- handshake -------------------------------------------------------------------------

  /** Negotiates until the client picks an export (true) or leaves (false). */
  private async handshake(): Promise<boolean> {
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(NBD_MAGIC, 0);
    hello.writeBigUInt64BE(IHAVEOPT, 8);
    hello.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    this.socket.write(hello);
    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if (clientFlags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)) throw new ProtocolViolation(`unknown client flags 0x${clientFlags.toString(16)}`);
    this.noZeroes = (clientFlags & FLAG_NO_ZEROES) !== 0;
    for (;;) {
      // A client that sends options without reading the replies must not make them pile up here.
      if (this.socket.writableNeedDrain) await this.sendPending();
      if (!this.socket.writable) throw new ConnectionClosed();
      const head = await this.reader.read(16);
      if (head.readBigUInt64BE(0) !== IHAVEOPT) throw new ProtocolViolation('option without the IHAVEOPT magic');
      const option = head.readUInt32BE(8);
      const length = head.readUInt32BE(12);
      if (option === Option.EXPORT_NAME) return this.exportName(length);
      if (length > MAX_OPTION) {
        await this.reader.skip(length);
        this.optionReply(option, OptionReply.ERR_TOO_BIG, `option data of ${length} bytes is larger than ${MAX_OPTION}`);
        continue;
      }
      const data = length ? await this.reader.read(length) : Buffer.alloc(0);
      const outcome = this.option(option, data);
      if (outcome === 'abort') {
        await this.endGracefully();
        return false;
      }
      if (outcome === 'go') return true;
    }
  }

  /** Handles one option; 'go' enters transmission, 'abort' ends the connection. */
  private option(option: number, data: Buffer): 'go' | 'abort' | 'more' {
    switch (option) {
      case Option.ABORT:
        this.optionReply(option, OptionReply.ACK);
        return 'abort';
      case Option.LIST:
        if (data.length) return this.refuse(option, OptionReply.ERR_INVALID, 'LIST takes no data');
        for (const e of this.exports.list()) this.optionReply(option, OptionReply.SERVER, Buffer.concat([u32(Buffer.byteLength(e.name)), Buffer.from(e.name), Buffer.from(e.description)]));
        this.optionReply(option, OptionReply.ACK);
        return 'more';
      case Option.INFO:
      case Option.GO:
        return this.infoOrGo(option, data);
      case Option.STRUCTURED_REPLY:
        if (data.length) return this.refuse(option, OptionReply.ERR_INVALID, 'STRUCTURED_REPLY takes no data');
        this.structured = true;
        this.optionReply(option, OptionReply.ACK);
        return 'more';
      case Option.LIST_META_CONTEXT:
      case Option.SET_META_CONTEXT:
        return this.metaContext(option, data);
      case Option.STARTTLS:
        return this.refuse(option, OptionReply.ERR_UNSUP, 'TLS is not offered; connect over the unix socket or loopback');
      default:
        return this.refuse(option, OptionReply.ERR_UNSUP, `option ${option} is not supported`);
    }
  }

  private async exportName(length: number): Promise<boolean> {
    if (length > MAX_STRING) throw new ProtocolViolation(`export name of ${length} bytes`);
    const name = (await this.reader.read(length)).toString('utf8');
    const chosen = this.exports.find(name);
    if (!chosen) throw new ProtocolViolation(`no export named "${name}"`);
    const reply = Buffer.alloc(this.noZeroes ? 10 : 134);
    reply.writeBigUInt64BE(BigInt(chosen.size), 0);
    reply.writeUInt16BE(chosen.transmissionFlags, 8);
    this.socket.write(reply);
    this.export = chosen;
    this.metaContextExport = null; // EXPORT_NAME gives no structured replies' contexts
    return true;
  }

  private infoOrGo(option: number, data: Buffer): 'go' | 'more' {
    const request = parseInfoRequest(data);
    if (!request) return this.refuse(option, OptionReply.ERR_INVALID, 'malformed INFO/GO request');
    const chosen = this.exports.find(request.name);
    if (!chosen) return this.refuse(option, OptionReply.ERR_UNKNOWN, `no export named "${request.name}"; ask with LIST`);
    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(Info.EXPORT, 0);
    exportInfo.writeBigUInt64BE(BigInt(chosen.size), 2);
    exportInfo.writeUInt16BE(chosen.transmissionFlags, 10);
    this.optionReply(option, OptionReply.INFO, exportInfo);
    for (const wanted of new Set(request.infos)) {
      if (wanted === Info.NAME) this.optionReply(option, OptionReply.INFO, Buffer.concat([u16(Info.NAME), Buffer.from(chosen.name)]));
      if (wanted === Info.DESCRIPTION && chosen.description) {
        this.optionReply(option, OptionReply.INFO, Buffer.concat([u16(Info.DESCRIPTION), Buffer.from(chosen.description)]));
      }
      if (wanted === Info.BLOCK_SIZE) {
        const [min, preferred, max] = chosen.blockSizes;
        this.optionReply(option, OptionReply.INFO, Buffer.concat([u16(Info.BLOCK_SIZE), u32(min), u32(preferred), u32(max)]));
      }
    }
    this.optionReply(option, OptionReply.ACK);
    if (option === Option.INFO) return 'more';
    if (this.metaContextExport !== null && this.exports.find(this.metaContextExport) !== chosen) this.metaContextExport = null;
    this.export = chosen;
    return 'go';
  }

  private metaContext(option: number, data: Buffer): 'more' {
    const request = parseMetaContextRequest(data);
    if (!request) return this.refuse(option, OptionReply.ERR_INVALID, 'malformed meta context request');
    if (option === Option.SET_META_CONTEXT && !this.structured) {
      return this.refuse(option, OptionReply.ERR_INVALID, 'negotiate structured replies before SET_META_CONTEXT');
    }
    if (!this.exports.find(request.name)) return this.refuse(option, OptionReply.ERR_UNKNOWN, `no export named "${request.name}"`);
    const listing = option === Option.LIST_META_CONTEXT;
    const selected = request.queries.length === 0
      ? listing
      : request.queries.some((q) => q === BASE_ALLOCATION || (listing && q === 'base:'));
    if (selected) this.optionReply(option, OptionReply.META_CONTEXT, Buffer.concat([u32(BASE_ALLOCATION_ID), Buffer.from(BASE_ALLOCATION)]));
    if (!listing) this.metaContextExport = selected ? request.name : null;
    this.optionReply(option, OptionReply.ACK);
    return 'more';
  }

  private refuse(option: number, type: number, message: string): 'more' {
    this.optionReply(option, type, message);
    return 'more';
  }

  private optionReply(option: number, type: number, data: Buffer | string = Buffer.alloc(0)): void {
    const payload = typeof data === 'string' ? Buffer.from(data) : data;
    const head = Buffer.alloc(20);
    head.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    head.writeUInt32BE(option, 8);
    head.writeUInt32BE(type, 12);
    head.writeUInt32BE(payload.length, 16);
    this.socket.write(payload.length ? Buffer.concat([head, payload]) : head);
  }

  // ---- transmission ----------------------------------------------------------------------

  private async transmission(): Promise<void> {
    const exp = this.export!;
    this.socket.cork();
    let queued = 0;
    try {
      for (;;) {
        // Requests still buffered from a client that has gone would only keep the disk busy for nobody.
        if (!this.socket.writable) throw new ConnectionClosed();
        let header = this.reader.tryRead(REQUEST_HEADER_SIZE);
        if (!header) {
          await this.sendPending();
          queued = 0;
          header = await this.reader.read(REQUEST_HEADER_SIZE);
          this.socket.cork();
        }
        if (header.readUInt32BE(0) !== REQUEST_MAGIC) throw new ProtocolViolation('request without the request magic');
        const flags = header.readUInt16BE(4);
        const type = header.readUInt16BE(6);
        const handle = header.subarray(8, 16);
        const offset = Number(header.readBigUInt64BE(16));
        const length = header.readUInt32BE(24);
        let payload: Buffer | null = null;
        if (type === Command.WRITE) {
          if (length > MAX_REQUEST) throw new ProtocolViolation(`write of ${length} bytes is larger than the ${MAX_REQUEST}-byte maximum`);
          payload = this.reader.tryRead(length);
          if (!payload) {
            await this.sendPending();
            payload = await this.reader.read(length);
            this.socket.cork();
          }
        }
        if (type === Command.DISC) {
          await Promise.allSettled([...this.asyncReads]);
          if (!exp.writeRefusal()) this.flushQuietly(exp);
          // The replies to the requests before DISC must reach the client before the close.
          await this.endGracefully();
          return;
        }
        try {
          this.execute(exp, type, flags, handle, offset, length, payload);
        } catch (e) {
          this.replyError(type, handle, e);
        }
        if (++queued >= MAX_QUEUED_REPLIES || this.socket.writableLength > OUTPUT_HIGH_WATER) {
          await this.sendPending();
          queued = 0;
          this.socket.cork();
        }
        if (this.asyncReads.size >= MAX_ASYNC_READS) {
          // Taken before waiting for the socket: by then every read may have finished and left the set.
          const oneDone = Promise.race(this.asyncReads);
          await this.sendPending();
          queued = 0;
          await oneDone;
          this.socket.cork();
        }
      }
    } finally {
      this.socket.uncork();
    }
  }

  private execute(exp: NbdExport, type: number, flags: number, handle: Buffer, offset: number, length: number, payload: Buffer | null): void {
    const allowed = ALLOWED_FLAGS[type];
    if (allowed === undefined) throw new RequestError(Errno.EINVAL, `command ${type} is not supported`);
    if (flags & ~allowed) throw new RequestError(Errno.EINVAL, `flags 0x${flags.toString(16)} are not valid for command ${type}`);
    const writes = type === Command.WRITE || type === Command.TRIM || type === Command.WRITE_ZEROES;
    // Every change a client asks for passes here: once the export's gate is closed (a VM's run
    // licence has ended), nothing more is applied, not even a flush.
    const closed = writes || type === Command.FLUSH ? exp.writeRefusal() : null;
    if (closed) throw new RequestError(Errno.EIO, closed);
    if (type === Command.FLUSH) {
      exp.flush();
      this.simpleReply(handle, 0);
      return;
    }
    const outOfRange = !Number.isSafeInteger(offset) || offset + length > exp.size;
    if (length === 0) throw new RequestError(Errno.EINVAL, 'zero-length request');
    if (writes && exp.readOnly) throw new RequestError(Errno.EPERM, `export "${exp.name}" is read-only`);
    if (outOfRange) {
      const errno = type === Command.WRITE || type === Command.WRITE_ZEROES ? Errno.ENOSPC : Errno.EINVAL;
      throw new RequestError(errno, `${length} bytes at offset ${offset} run past the end of the export (${exp.size} bytes)`);
    }
    switch (type) {
      case Command.READ:
        if (length > MAX_REQUEST) throw new RequestError(Errno.EINVAL, `read of ${length} bytes is larger than the ${MAX_REQUEST}-byte maximum`);
        this.replyRead(exp, handle, offset, length);
        return;
      case Command.WRITE:
        exp.write(offset, payload!);
        break;
      case Command.TRIM:
        exp.trim(offset, length);
        break;
      case Command.WRITE_ZEROES:
        exp.writeZeroes(offset, length, (flags & CommandFlag.NO_HOLE) !== 0);
        break;
      case Command.BLOCK_STATUS:
        if (!this.structured || this.metaContextExport === null) throw new RequestError(Errno.EINVAL, 'no metadata context was negotiated');
        this.replyBlockStatus(exp, handle, offset, length, (flags & CommandFlag.REQ_ONE) ? 1 : MAX_EXTENTS);
        return;
    }
    if (flags & CommandFlag.FUA) exp.flush();
    this.simpleReply(handle, 0);
  }

  private replyRead(exp: NbdExport, handle: Buffer, offset: number, length: number): void {
    if (this.structured && exp.isHole(offset, length)) {
      const hole = Buffer.allocUnsafe(12);
      hole.writeBigUInt64BE(BigInt(offset), 0);
      hole.writeUInt32BE(length, 8);
      this.socket.write(Buffer.concat([chunkHeader(handle, ReplyType.OFFSET_HOLE, hole.length), hole]));
      return;
    }
    const headerSize = this.structured ? 28 : 16;
    const reply = Buffer.allocUnsafe(headerSize + length);
    if (this.structured) {
      chunkHeader(handle, ReplyType.OFFSET_DATA, 8 + length).copy(reply, 0);
      reply.writeBigUInt64BE(BigInt(offset), 20);
    } else {
      writeSimpleHeader(reply, handle, 0);
    }
    if (length < ASYNC_READ_MIN) {
      exp.read(offset, reply.subarray(headerSize));
      this.socket.write(reply);
      return;
    }
    // The handle is a view of the input buffer; keep a copy for the reply sent later.
    const ownHandle = Buffer.from(handle);
    const read = exp.readAsync(offset, reply.subarray(headerSize)).then(
      () => { if (!this.socket.destroyed) this.socket.write(reply); },
      (e: unknown) => { if (!this.socket.destroyed) this.replyError(Command.READ, ownHandle, e); },
    );
    const tracked = read.finally(() => this.asyncReads.delete(tracked));
    this.asyncReads.add(tracked);
  }

  private replyBlockStatus(exp: NbdExport, handle: Buffer, offset: number, length: number, maxExtents: number): void {
    const extents = exp.blockStatus(offset, length, maxExtents);
    const payload = Buffer.allocUnsafe(4 + 8 * extents.length);
    payload.writeUInt32BE(BASE_ALLOCATION_ID, 0);
    extents.forEach((e, i) => {
      payload.writeUInt32BE(e.length, 4 + 8 * i);
      payload.writeUInt32BE(e.flags, 8 + 8 * i);
    });
    this.socket.write(Buffer.concat([chunkHeader(handle, ReplyType.BLOCK_STATUS, payload.length), payload]));
  }

  private replyError(type: number, handle: Buffer, e: unknown): void {
    const { errno, message } = describeFailure(e);
    if (!(e instanceof RequestError)) this.log(`request failed: ${message}`);
    if (this.structured && (type === Command.READ || type === Command.BLOCK_STATUS)) {
      const text = Buffer.from(message.slice(0, 1024));
      const payload = Buffer.allocUnsafe(6 + text.length);
      payload.writeUInt32BE(errno, 0);
      payload.writeUInt16BE(text.length, 4);
      text.copy(payload, 6);
      this.socket.write(Buffer.concat([chunkHeader(handle, ReplyType.ERROR, payload.length), payload]));
      return;
    }
    this.simpleReply(handle, errno);
  }

  private simpleReply(handle: Buffer, errno: number): void {
    const reply = Buffer.allocUnsafe(16);
    writeSimpleHeader(reply, handle, errno);
    this.socket.write(reply);
  }

  /** Sends what is corked and waits until the socket can take more. */
  private async sendPending(): Promise<void> {
    this.socket.uncork();
    if (this.socket.writableNeedDrain && !this.socket.destroyed) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.socket.off('drain', done);
          this.socket.off('close', done);
          resolve();
        };
        this.socket.on('drain', done);
        this.socket.on('close', done);
      });
    }
  }

  /** Closes once everything queued is sent: destroy() would drop replies still in the socket's buffer. */
  private async endGracefully(): Promise<void> {
    this.socket.uncork();
    if (this.socket.destroyed) return;
    await new Promise<void>((resolve) => {
      this.socket.once('close', resolve);
      this.socket.end(resolve);
    });
  }

  private flushQuietly(exp: NbdExport): void {
    try {
      exp.flush();
    } catch (e) {
      this.log(`flush at disconnect failed: ${(e as Error).message}`);
    }
  }
}

function describeFailure(e: unknown): { errno: number; message: string } {
  if (e instanceof RequestError) return { errno: e.errno, message: e.message };
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof VhdError && e.code === 'VHD_E_READ_ONLY') return { errno: Errno.EPERM, message };
  if (/ENOSPC|EDQUOT|EFBIG/.test(message)) return { errno: Errno.ENOSPC, message };
  return { errno: Errno.EIO, message };
}

function writeSimpleHeader(target: Buffer, handle: Buffer, errno: number): void {
  target.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  target.writeUInt32BE(errno, 4);
  handle.copy(target, 8);
}

function chunkHeader(handle: Buffer, type: number, length: number): Buffer {
  const head = Buffer.allocUnsafe(20);
  head.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  head.writeUInt16BE(REPLY_FLAG_DONE, 4);
  head.writeUInt16BE(type, 6);
  handle.copy(head, 8);
  head.writeUInt32BE(length, 16);
  return head;
}

function parseInfoRequest(data: Buffer): { name: string; infos: number[] } | null {
  if (data.length < 6) return null;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > MAX_STRING || 4 + nameLength + 2 > data.length) return null;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) return null;
  const infos = Array.from({ length: count }, (_, i) => data.readUInt16BE(6 + nameLength + 2 * i));
  return { name, infos };
}

function parseMetaContextRequest(data: Buffer): { name: string; queries: string[] } | null {
  if (data.length < 8) return null;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > MAX_STRING || 4 + nameLength + 4 > data.length) return null;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt32BE(4 + nameLength);
  const queries: string[] = [];
  let at = 8 + nameLength;
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return null;
    const length = data.readUInt32BE(at);
    if (length > MAX_STRING || at + 4 + length > data.length) return null;
    queries.push(data.toString('utf8', at + 4, at + 4 + length));
    at += 4 + length;
  }
  return at === data.length ? { name, queries } : null;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
