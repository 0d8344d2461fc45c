// A small NBD client for tests, written from the protocol (NetworkBlockDevice/nbd doc/proto.md)
// and sharing no code with the server: the fixed newstyle handshake, options sent as raw as a
// test likes, and transmission with pipelined requests whose replies (simple or structured)
// are matched to their requests by handle. It trusts nothing: a reply with an unknown handle,
// a bad magic or a chunk that does not fit its request is a protocol error that fails every
// pending request. Low-level calls (send any bytes, read bytes, wait for the close) let tests
// misbehave on purpose.

import net from 'node:net';

export const NBD_MAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const FLAG_FIXED_NEWSTYLE = 1;
export const FLAG_NO_ZEROES = 2;

export const Opt = {
  EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10, EXTENDED_HEADERS: 11,
} as const;

export const Rep = {
  ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4,
  ERR_UNSUP: 2 ** 31 + 1, ERR_POLICY: 2 ** 31 + 2, ERR_INVALID: 2 ** 31 + 3, ERR_PLATFORM: 2 ** 31 + 4,
  ERR_TLS_REQD: 2 ** 31 + 5, ERR_UNKNOWN: 2 ** 31 + 6, ERR_SHUTDOWN: 2 ** 31 + 7, ERR_BLOCK_SIZE_REQD: 2 ** 31 + 8,
  ERR_TOO_BIG: 2 ** 31 + 9,
} as const;

export const InfoType = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const TFlag = {
  HAS_FLAGS: 1, READ_ONLY: 2, SEND_FLUSH: 4, SEND_FUA: 8, ROTATIONAL: 16, SEND_TRIM: 32,
  SEND_WRITE_ZEROES: 64, SEND_DF: 128, CAN_MULTI_CONN: 256,
} as const;

export const Cmd = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const CmdFlag = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;

export const Chunk = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 2 ** 15 + 1, ERROR_OFFSET: 2 ** 15 + 2 } as const;
export const CHUNK_DONE = 1;

export const Err = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;

export const STATE_HOLE = 1;
export const STATE_ZERO = 2;

const ERROR_NAMES = new Map<number, string>(Object.entries(Err).map(([k, v]) => [v, k]));
const REPLY_NAMES = new Map<number, string>(Object.entries(Rep).map(([k, v]) => [v, k]));

export function errnoName(errno: number): string {
  return ERROR_NAMES.get(errno) ?? `errno ${errno}`;
}

export function replyName(type: number): string {
  return REPLY_NAMES.get(type) ?? `reply type ${type}`;
}

/** The server closed the connection (or it was destroyed) before the awaited bytes or reply came. */
export class NbdClosedError extends Error {}

/** The server broke the protocol (as this client sees it). */
export class NbdProtocolError extends Error {}

/** An option's final reply was an error. */
export class NbdOptionError extends Error {
  constructor(readonly option: number, readonly type: number, readonly text: string) {
    super(`option ${option} refused with ${replyName(type)}: ${text}`);
  }
}

/** A request's reply carried an error. */
export class NbdRequestError extends Error {
  constructor(readonly command: number, readonly errno: number, readonly text: string) {
    super(`command ${command} failed with ${errnoName(errno)}${text ? `: ${text}` : ''}`);
  }
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface ExportInfo {
  size: number;
  flags: number;
  name?: string;
  description?: string;
  blockSizes?: [number, number, number];
}

export interface Extent {
  length: number;
  flags: number;
}

export interface ChunkRecord {
  type: number;
  flags: number;
  length: number;
}

/** Everything a request got back: `error` 0 is success. */
export interface Reply {
  command: number;
  handle: bigint;
  error: number;
  message: string;
  /** Whether the reply came as structured chunks. */
  structured: boolean;
  chunks: ChunkRecord[];
  /** READ: the data, holes filled with zeros. */
  data?: Buffer;
  /** BLOCK_STATUS: context id -> extents. */
  extents?: Map<number, Extent[]>;
}

/** One reply message as it came, matched to nothing (see NbdClient.readRawReply). */
export interface RawReply {
  structured: boolean;
  handle: bigint;
  /** Simple replies: the error field. */
  error: number;
  /** Structured chunks: flags, type and the whole payload. */
  flags: number;
  type: number;
  payload: Buffer;
}

export interface RequestOptions {
  flags?: number;
  /** The handle to send; by default a fresh one. Must not be pending already. */
  handle?: bigint;
  /** Overrides the length field (WRITE: by default the data's length). */
  length?: number;
}

interface Pending {
  command: number;
  offset: number;
  length: number;
  reply: Reply;
  /** READ: which bytes chunks have covered, to catch overlaps and gaps. */
  covered: number;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
}

export type Target = string | { path: string } | { port: number; host?: string };

export class NbdClient {
  readonly socket: net.Socket;
  /** Handshake flags from the server's greeting. */
  serverFlags = 0;
  noZeroes = false;
  structured = false;
  /** Meta contexts the last SET_META_CONTEXT selected: name -> id. */
  contexts = new Map<string, number>();
  /** The export entered (after GO or EXPORT_NAME). */
  export: ExportInfo | null = null;
  /** Set when the server broke the protocol (the connection is then destroyed). */
  protocolError: Error | null = null;
  /** Replies in the order they completed: handles. */
  readonly completed: bigint[] = [];

  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private waiter: (() => void) | null = null;
  private nextHandle = 0x1000n;
  private readonly pending = new Map<bigint, Pending>();
  private dispatching = false;
  private closedFlag = false;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.closedFlag = true;
        this.ended = true;
        this.wake();
        resolve();
      });
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => { /* seen as the close */ });
  }

  /** Connects; by default also reads the server's greeting (the NBDMAGIC/IHAVEOPT and flags). */
  static async connect(target: Target, options: { greeting?: boolean } = {}): Promise<NbdClient> {
    const where = typeof target === 'string' ? { path: target } : target;
    const socket = 'path' in where ? net.connect(where.path) : net.connect(where.port, where.host ?? '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve();
      });
      socket.once('error', reject);
    });
    const client = new NbdClient(socket);
    if (options.greeting ?? true) await client.readGreeting();
    return client;
  }

  /** Connects and negotiates up to transmission on `name` with GO (structured replies and base:allocation if asked). */
  static async open(target: Target, name: string, options: { structured?: boolean; metaContexts?: string[] } = {}): Promise<NbdClient> {
    const client = await NbdClient.connect(target);
    try {
      client.sendClientFlags();
      if (options.structured || options.metaContexts?.length) await client.structuredReplies();
      if (options.metaContexts?.length) await client.setMetaContext(name, options.metaContexts);
      await client.go(name);
      return client;
    } catch (e) {
      client.destroy();
      throw e;
    }
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  // ---- raw bytes --------------------------------------------------------------------------

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Batches the writes that follow into few syscalls (until uncork). */
  cork(): void {
    this.socket.cork();
  }

  uncork(): void {
    this.socket.uncork();
  }

  /** Stops taking bytes off the socket (the kernel's buffers then fill up and the server is pushed back). */
  pauseReading(): void {
    this.socket.pause();
  }

  resumeReading(): void {
    this.socket.resume();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Exactly `n` bytes, or NbdClosedError if the connection ends first. Not while requests sent
   * with request() are pending: their replies are read by the client itself.
   */
  async readBytes(n: number): Promise<Buffer> {
    for (;;) {
      if (this.buffered >= n) return this.take(n);
      if (this.ended) throw new NbdClosedError(`connection closed with ${this.buffered} of ${n} awaited bytes received`);
      await new Promise<void>((resolve) => { this.waiter = resolve; });
    }
  }

  /** Bytes received and not yet read. */
  get available(): number {
    return this.buffered;
  }

  /**
   * Whether the server closes the connection within `timeoutMs`. Bytes it sends meanwhile are
   * kept (readBytes can still read them).
   */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    if (this.closedFlag) return true;
    this.socket.resume();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); });
    try {
      return await Promise.race([this.closed.then(() => true), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  private take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0];
      const k = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, k);
      filled += k;
      if (k === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(k);
    }
    this.buffered -= n;
    return out;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  // ---- handshake --------------------------------------------------------------------------

  async readGreeting(): Promise<number> {
    const hello = await this.readBytes(18);
    if (hello.readBigUInt64BE(0) !== NBD_MAGIC) throw new NbdProtocolError(`greeting without NBDMAGIC: ${hello.toString('hex')}`);
    if (hello.readBigUInt64BE(8) !== IHAVEOPT) throw new NbdProtocolError(`not a newstyle server: ${hello.toString('hex')}`);
    this.serverFlags = hello.readUInt16BE(16);
    return this.serverFlags;
  }

  sendClientFlags(flags = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES): void {
    this.noZeroes = (flags & FLAG_NO_ZEROES) !== 0;
    const b = Buffer.alloc(4);
    b.writeUInt32BE(flags >>> 0);
    this.send(b);
  }

  /** Sends an option; `length` may lie about the data's length, `magic` may be wrong. */
  sendOption(option: number, data: Buffer = Buffer.alloc(0), options: { magic?: bigint; length?: number } = {}): void {
    const head = Buffer.alloc(16);
    head.writeBigUInt64BE(options.magic ?? IHAVEOPT, 0);
    head.writeUInt32BE(option >>> 0, 8);
    head.writeUInt32BE((options.length ?? data.length) >>> 0, 12);
    this.send(data.length ? Buffer.concat([head, data]) : head);
  }

  async readOptionReply(): Promise<OptionReply> {
    const head = await this.readBytes(20);
    if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new NbdProtocolError(`option reply with a bad magic: ${head.toString('hex')}`);
    const option = head.readUInt32BE(8);
    const type = head.readUInt32BE(12);
    const length = head.readUInt32BE(16);
    const data = length ? await this.readBytes(length) : Buffer.alloc(0);
    return { option, type, data };
  }

  /** Reads replies to `option` up to its final one (ACK or an error); all of them, the final last. */
  async readOptionReplies(option: number): Promise<OptionReply[]> {
    const replies: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      if (r.option !== option) throw new NbdProtocolError(`reply for option ${r.option} while waiting for option ${option}`);
      replies.push(r);
      if (r.type === Rep.ACK || r.type >= 2 ** 31) return replies;
    }
  }

  /** Sends an option and reads its replies; an error as the final reply is thrown unless `allowError`. */
  async option(option: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const replies = await this.readOptionReplies(option);
    const last = replies[replies.length - 1];
    if (last.type !== Rep.ACK) throw new NbdOptionError(option, last.type, last.data.toString('utf8'));
    return replies;
  }

  async structuredReplies(): Promise<void> {
    await this.option(Opt.STRUCTURED_REPLY);
    this.structured = true;
  }

  async list(): Promise<Array<{ name: string; description: string }>> {
    const replies = await this.option(Opt.LIST);
    return replies.filter((r) => r.type === Rep.SERVER).map((r) => {
      const n = r.data.readUInt32BE(0);
      return { name: r.data.toString('utf8', 4, 4 + n), description: r.data.toString('utf8', 4 + n) };
    });
  }

  async setMetaContext(name: string, queries: string[], option: number = Opt.SET_META_CONTEXT): Promise<Map<string, number>> {
    const replies = await this.option(option, metaContextData(name, queries));
    const found = new Map<string, number>();
    for (const r of replies) if (r.type === Rep.META_CONTEXT) found.set(r.data.toString('utf8', 4), r.data.readUInt32BE(0));
    if (option === Opt.SET_META_CONTEXT) this.contexts = found;
    return found;
  }

  /** INFO (stays in negotiation) or GO (enters transmission on success). */
  async go(name: string, infos: number[] = [], option: number = Opt.GO): Promise<ExportInfo> {
    const replies = await this.option(option, infoData(name, infos));
    const info = parseInfos(replies);
    if (option === Opt.GO) this.export = info;
    return info;
  }

  async info(name: string, infos: number[] = []): Promise<ExportInfo> {
    return this.go(name, infos, Opt.INFO);
  }

  /** The legacy way in: no reply header, just size, flags and (unless NO_ZEROES) 124 zeros. */
  async exportName(name: string): Promise<ExportInfo> {
    this.sendOption(Opt.EXPORT_NAME, Buffer.from(name));
    const reply = await this.readBytes(this.noZeroes ? 10 : 134);
    if (!this.noZeroes && !reply.subarray(10).equals(Buffer.alloc(124))) throw new NbdProtocolError('EXPORT_NAME reply padding is not zeros');
    this.export = { size: Number(reply.readBigUInt64BE(0)), flags: reply.readUInt16BE(8) };
    // EXPORT_NAME negotiates no meta contexts.
    this.contexts = new Map();
    return this.export;
  }

  async abort(): Promise<OptionReply> {
    this.sendOption(Opt.ABORT);
    return this.readOptionReply();
  }

  // ---- transmission -----------------------------------------------------------------------

  /** Sends a request header (and payload) with no bookkeeping; returns the handle. */
  sendRequest(command: number, offset: number | bigint, length: number, options: { flags?: number; handle?: bigint; data?: Buffer; magic?: number } = {}): bigint {
    const handle = options.handle ?? this.nextHandle++;
    const head = Buffer.alloc(28);
    head.writeUInt32BE(options.magic ?? REQUEST_MAGIC, 0);
    head.writeUInt16BE(options.flags ?? 0, 4);
    head.writeUInt16BE(command, 6);
    head.writeBigUInt64BE(BigInt.asUintN(64, handle), 8);
    head.writeBigUInt64BE(BigInt(offset), 16);
    head.writeUInt32BE(length >>> 0, 24);
    if (options.data?.length) {
      this.send(head);
      this.send(options.data);
    } else {
      this.send(head);
    }
    return handle;
  }

  /**
   * Reads one reply message without matching it to a request (for requests sent with
   * sendRequest): a simple reply's 16 bytes, whose data (for a READ) the caller reads with
   * readBytes, or a whole structured chunk. Not while request() replies are pending.
   */
  async readRawReply(): Promise<RawReply> {
    if (this.dispatching) throw new Error('readRawReply while request() replies are pending');
    const magic = (await this.readBytes(4)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const head = await this.readBytes(12);
      return { structured: false, error: head.readUInt32BE(0), handle: head.readBigUInt64BE(4), flags: 0, type: 0, payload: Buffer.alloc(0) };
    }
    if (magic !== STRUCTURED_REPLY_MAGIC) throw new NbdProtocolError(`reply with magic 0x${magic.toString(16)}`);
    const head = await this.readBytes(16);
    const length = head.readUInt32BE(12);
    const payload = length ? await this.readBytes(length) : Buffer.alloc(0);
    return { structured: true, error: 0, handle: head.readBigUInt64BE(4), flags: head.readUInt16BE(0), type: head.readUInt16BE(2), payload };
  }

  /** Sends a request and resolves with its whole reply (errors included, not thrown). */
  request(command: number, offset: number | bigint, length: number, data?: Buffer, options: RequestOptions = {}): Promise<Reply> {
    if (command === Cmd.DISC) throw new Error('DISC has no reply: use disconnect() or sendRequest()');
    if (this.protocolError) return Promise.reject(this.protocolError);
    if (this.closedFlag) return Promise.reject(new NbdClosedError('connection is closed'));
    const handle = BigInt.asUintN(64, options.handle ?? this.nextHandle++);
    if (this.pending.has(handle)) throw new Error(`handle ${handle} is already pending`);
    const promise = new Promise<Reply>((resolve, reject) => {
      this.pending.set(handle, {
        command, offset: Number(offset), length: options.length ?? length, covered: 0, resolve, reject,
        reply: { command, handle, error: 0, message: '', structured: false, chunks: [] },
      });
    });
    this.sendRequest(command, offset, options.length ?? length, { flags: options.flags, handle, data });
    if (!this.dispatching) void this.dispatch();
    return promise;
  }

  async read(offset: number, length: number, flags = 0): Promise<Buffer> {
    return expectOk(await this.request(Cmd.READ, offset, length, undefined, { flags })).data!;
  }

  async write(offset: number, data: Buffer, flags = 0): Promise<void> {
    expectOk(await this.request(Cmd.WRITE, offset, data.length, data, { flags }));
  }

  async flush(): Promise<void> {
    expectOk(await this.request(Cmd.FLUSH, 0, 0));
  }

  async trim(offset: number, length: number, flags = 0): Promise<void> {
    expectOk(await this.request(Cmd.TRIM, offset, length, undefined, { flags }));
  }

  async writeZeroes(offset: number, length: number, flags = 0): Promise<void> {
    expectOk(await this.request(Cmd.WRITE_ZEROES, offset, length, undefined, { flags }));
  }

  /** base:allocation extents (the first context the server selected). */
  async blockStatus(offset: number, length: number, flags = 0): Promise<Extent[]> {
    const reply = expectOk(await this.request(Cmd.BLOCK_STATUS, offset, length, undefined, { flags }));
    const id = this.contexts.get('base:allocation');
    const extents = id === undefined ? undefined : reply.extents?.get(id);
    if (!extents) throw new NbdProtocolError('BLOCK_STATUS reply without base:allocation extents');
    return extents;
  }

  /** Sends NBD_CMD_DISC (no reply) and waits for the server to close. */
  async disconnect(timeoutMs = 5000): Promise<boolean> {
    if (this.closedFlag) return true;
    this.sendRequest(Cmd.DISC, 0, 0);
    return this.waitClosed(timeoutMs);
  }

  /** Reads replies while requests are pending. */
  private async dispatch(): Promise<void> {
    this.dispatching = true;
    try {
      while (this.pending.size) await this.readReply();
    } catch (e) {
      const error = e instanceof NbdClosedError ? e : (this.protocolError = e as Error);
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
      if (!(e instanceof NbdClosedError)) this.socket.destroy();
    } finally {
      this.dispatching = false;
    }
  }

  private async readReply(): Promise<void> {
    const magic = (await this.readBytes(4)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const head = await this.readBytes(12);
      const error = head.readUInt32BE(0);
      const p = this.claim(head.readBigUInt64BE(4));
      p.reply.error = error;
      if (error === 0 && p.command === Cmd.READ) {
        p.reply.data = await this.readBytes(p.length);
        p.covered = p.length;
      }
      this.finish(p);
      return;
    }
    if (magic !== STRUCTURED_REPLY_MAGIC) throw new NbdProtocolError(`reply with magic 0x${magic.toString(16)}`);
    if (!this.structured) throw new NbdProtocolError('structured reply chunk though structured replies were not negotiated');
    const head = await this.readBytes(16);
    const flags = head.readUInt16BE(0);
    const type = head.readUInt16BE(2);
    const handle = head.readBigUInt64BE(4);
    const length = head.readUInt32BE(12);
    const p = this.pending.get(handle);
    if (!p) throw new NbdProtocolError(`structured chunk for handle 0x${handle.toString(16)}, which is not pending`);
    const payload = length ? await this.readBytes(length) : Buffer.alloc(0);
    p.reply.structured = true;
    p.reply.chunks.push({ type, flags, length });
    this.applyChunk(p, type, payload);
    if (flags & CHUNK_DONE) {
      this.pending.delete(handle);
      if (p.command === Cmd.READ && p.reply.error === 0 && p.covered !== p.length) {
        throw new NbdProtocolError(`READ of ${p.length} bytes answered with ${p.covered} bytes of chunks`);
      }
      this.finish(p);
    }
  }

  private applyChunk(p: Pending, type: number, payload: Buffer): void {
    const within = (offset: number, n: number): number => {
      const at = offset - p.offset;
      if (at < 0 || at + n > p.length) throw new NbdProtocolError(`chunk of ${n} bytes at ${offset} outside the READ of ${p.length} at ${p.offset}`);
      return at;
    };
    switch (type) {
      case Chunk.NONE:
        return;
      case Chunk.OFFSET_DATA: {
        if (p.command !== Cmd.READ) throw new NbdProtocolError(`OFFSET_DATA for command ${p.command}`);
        const offset = Number(payload.readBigUInt64BE(0));
        const at = within(offset, payload.length - 8);
        p.reply.data ??= Buffer.alloc(p.length);
        payload.copy(p.reply.data, at, 8);
        p.covered += payload.length - 8;
        return;
      }
      case Chunk.OFFSET_HOLE: {
        if (p.command !== Cmd.READ) throw new NbdProtocolError(`OFFSET_HOLE for command ${p.command}`);
        const offset = Number(payload.readBigUInt64BE(0));
        const n = payload.readUInt32BE(8);
        const at = within(offset, n);
        p.reply.data ??= Buffer.alloc(p.length);
        p.reply.data.fill(0, at, at + n);
        p.covered += n;
        return;
      }
      case Chunk.BLOCK_STATUS: {
        if (p.command !== Cmd.BLOCK_STATUS) throw new NbdProtocolError(`BLOCK_STATUS chunk for command ${p.command}`);
        if ((payload.length - 4) % 8 !== 0) throw new NbdProtocolError(`BLOCK_STATUS chunk of ${payload.length} bytes`);
        const id = payload.readUInt32BE(0);
        const extents: Extent[] = [];
        for (let at = 4; at < payload.length; at += 8) extents.push({ length: payload.readUInt32BE(at), flags: payload.readUInt32BE(at + 4) });
        p.reply.extents ??= new Map();
        p.reply.extents.set(id, extents);
        return;
      }
      case Chunk.ERROR:
      case Chunk.ERROR_OFFSET: {
        p.reply.error = payload.readUInt32BE(0);
        const n = payload.readUInt16BE(4);
        p.reply.message = payload.toString('utf8', 6, 6 + n);
        if (p.reply.error === 0) throw new NbdProtocolError('error chunk with error 0');
        return;
      }
      default:
        if (type & 0x8000) {
          p.reply.error = payload.length >= 4 ? payload.readUInt32BE(0) : Err.EIO;
          return;
        }
        throw new NbdProtocolError(`unknown chunk type ${type}`);
    }
  }

  private claim(handle: bigint): Pending {
    const p = this.pending.get(handle);
    if (!p) throw new NbdProtocolError(`reply for handle 0x${handle.toString(16)}, which is not pending`);
    this.pending.delete(handle);
    return p;
  }

  private finish(p: Pending): void {
    if (p.command === Cmd.READ && p.reply.error === 0) p.reply.data ??= Buffer.alloc(p.length);
    this.completed.push(p.reply.handle);
    p.resolve(p.reply);
  }
}

/** Throws the reply's error, if it has one; returns it otherwise. */
export function expectOk(reply: Reply): Reply {
  if (reply.error !== 0) throw new NbdRequestError(reply.command, reply.error, reply.message);
  return reply;
}

export function infoData(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name);
  const out = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  out.writeUInt32BE(n.length, 0);
  n.copy(out, 4);
  out.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => out.writeUInt16BE(t, 6 + n.length + 2 * i));
  return out;
}

export function metaContextData(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v);
    return b;
  };
  const n = Buffer.from(name);
  parts.push(u32(n.length), n, u32(queries.length));
  for (const q of queries) {
    const b = Buffer.from(q);
    parts.push(u32(b.length), b);
  }
  return Buffer.concat(parts);
}

function parseInfos(replies: OptionReply[]): ExportInfo {
  const info: Partial<ExportInfo> = {};
  for (const r of replies) {
    if (r.type !== Rep.INFO) continue;
    const kind = r.data.readUInt16BE(0);
    if (kind === InfoType.EXPORT) {
      if (r.data.length !== 12) throw new NbdProtocolError(`NBD_INFO_EXPORT of ${r.data.length} bytes`);
      info.size = Number(r.data.readBigUInt64BE(2));
      info.flags = r.data.readUInt16BE(10);
    } else if (kind === InfoType.NAME) {
      info.name = r.data.toString('utf8', 2);
    } else if (kind === InfoType.DESCRIPTION) {
      info.description = r.data.toString('utf8', 2);
    } else if (kind === InfoType.BLOCK_SIZE) {
      info.blockSizes = [r.data.readUInt32BE(2), r.data.readUInt32BE(6), r.data.readUInt32BE(10)];
    }
  }
  if (info.size === undefined || info.flags === undefined) throw new NbdProtocolError('INFO/GO succeeded without NBD_INFO_EXPORT');
  return info as ExportInfo;
}
