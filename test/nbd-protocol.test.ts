// The NBD server (storage/nbd) against bad and abusive clients, speaking through the test's own
// client (test/helpers/nbd-client.ts). Each case checks the protocol's answer (an option error,
// a request error, or a closed connection, as proto.md prescribes), then that the server is
// unharmed: the bad connection is gone, a long-lived connection to another export and a fresh
// one to the abused export still read exactly what the disks hold, nothing was logged as an
// internal error, and both disks pass checkDisk.
//
// Most cases run against an NbdServer in this process with three exports (main, other, and a
// read-only ro); floods and protocol violations that could crash or bloat a server run against
// a spawned "vsctl vhd serve", whose resident memory is watched through /proc/PID/status.
// Not tested: a client that connects and never speaks (closed after a 30 s handshake timeout).

import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NbdExport, NbdServer } from '../storage/nbd/index.js';
import { VhdDisk, checkDisk, createDynamic } from '../storage/vhd/index.js';
import {
  CHUNK_DONE, Chunk, Cmd, CmdFlag, Err, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, InfoType, NbdClient, NbdOptionError, Opt,
  REQUEST_MAGIC, Rep, type Reply, STATE_HOLE, STATE_ZERO, STRUCTURED_REPLY_MAGIC, TFlag, errnoName, infoData, metaContextData, replyName,
} from './helpers/nbd-client.js';
import { type ServedVhd, serveVhd } from './helpers/nbd-fixtures.js';
import { ContentModel, KiB, MiB, assertSameBytes, makeTempDir, patternBytes, removeDir } from './helpers/vhd-fixtures.js';

const MAX_REQUEST = 32 * MiB;
const MAX_OPTION = 64 * KiB;
/** The spawned server's resident memory must stay under this while it is flooded. */
const RSS_LIMIT_MB = 300;

function assertReplyError(reply: Reply, errno: number, what: string): void {
  assert.equal(reply.error, errno, `${what}: expected ${errnoName(errno)}, got ${reply.error === 0 ? 'success' : errnoName(reply.error)}`);
}

async function assertOptionError(promise: Promise<unknown>, type: number, what: string): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof NbdOptionError, `${what}: expected option error ${replyName(type)}, got ${String(e)}`);
    assert.equal(e.type, type, `${what}: expected ${replyName(type)}, got ${replyName(e.type)} (${e.text})`);
    return true;
  });
}

async function assertClosed(client: NbdClient, what: string, timeoutMs = 5000): Promise<void> {
  assert.ok(await client.waitClosed(timeoutMs), `${what}: the server did not close the connection within ${timeoutMs} ms`);
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Reads every written range of `model` (and a margin of zeros) through `client` and compares. */
async function assertServes(client: NbdClient, model: ContentModel, what: string): Promise<void> {
  for (const [start, end] of model.ranges()) {
    const from = Math.max(0, start - 4 * KiB);
    const to = Math.min(model.size, end + 4 * KiB);
    for (let at = from; at < to; at += 4 * MiB) {
      const n = Math.min(4 * MiB, to - at);
      assertSameBytes(await client.read(at, n), model.read(at, n), at, what);
    }
  }
  const tail = model.size - 64 * KiB;
  assertSameBytes(await client.read(tail, 64 * KiB), model.read(tail, 64 * KiB), tail, `${what} (last 64 KiB)`);
}

async function assertValid(file: string, what: string): Promise<void> {
  const report = await checkDisk(file);
  assert.ok(report.valid, `${what}: checkDisk finds ${file} invalid: ${report.errors.map((e) => e.message).join('; ')}`);
}

// ---------------------------------------------------------------------------------------------
// A spawned "vsctl vhd serve"

function assertAlive(served: ServedVhd, what: string): void {
  assert.equal(served.child.exitCode, null, `${what}: the server exited with ${served.child.exitCode}: ${served.stderr()}`);
  assert.equal(served.child.signalCode, null, `${what}: the server died of ${served.child.signalCode}: ${served.stderr()}`);
  assert.doesNotThrow(() => process.kill(served.ready.pid, 0), `${what}: the server process ${served.ready.pid} is gone`);
}

function rssMB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  assert.ok(kb, `no VmRSS in /proc/${pid}/status`);
  return Number(kb[1]) / 1024;
}

/** Samples a process's VmRSS every 20 ms until stopped; returns the peak in MB. */
function watchRss(pid: number): { peak: () => number; stop: () => number } {
  let peak = rssMB(pid);
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssMB(pid));
    } catch {
      // gone: the caller's liveness check reports it
    }
  }, 20);
  timer.unref(); // a failed test must not keep the runner alive
  return { peak: () => peak, stop: () => { clearInterval(timer); return peak; } };
}

// ---------------------------------------------------------------------------------------------

describe('NBD server against bad and abusive clients', { timeout: 120_000 }, () => {
  let dir: string;
  let socketPath: string;
  let server: NbdServer;
  const disks: VhdDisk[] = [];
  const logs: string[] = [];
  let mainPath: string;
  let otherPath: string;
  let roPath: string;
  let main: ContentModel;
  let other: ContentModel;
  let ro: ContentModel;
  let roSize: number;
  /** Stays connected to "other" through every case. */
  let keeper: NbdClient;

  before(async () => {
    dir = makeTempDir('nbd-protocol');
    mainPath = path.join(dir, 'main.vhd');
    otherPath = path.join(dir, 'other.vhd');
    roPath = path.join(dir, 'ro.vhd');
    await createDynamic(mainPath, { size: 64 * MiB });
    await createDynamic(otherPath, { size: 16 * MiB, blockSize: 512 * KiB });
    await createDynamic(roPath, { size: 16 * MiB });
    const mainDisk = VhdDisk.open(mainPath, { writable: true, holder: 'nbd-protocol test' });
    const otherDisk = VhdDisk.open(otherPath, { writable: true, holder: 'nbd-protocol test' });
    const writeRo = VhdDisk.open(roPath, { writable: true, holder: 'nbd-protocol test' });
    main = new ContentModel(mainDisk.size);
    other = new ContentModel(otherDisk.size);
    ro = new ContentModel(writeRo.size);
    roSize = writeRo.size;
    // main: blocks 0-3 hold data, the rest (including block 4 onwards) is unallocated.
    main.write(0, patternBytes(1, 8 * MiB));
    mainDisk.write(patternBytes(1, 8 * MiB), 0);
    other.write(1 * MiB, patternBytes(2, 4 * MiB));
    otherDisk.write(patternBytes(2, 4 * MiB), 1 * MiB);
    ro.write(0, patternBytes(3, 2 * MiB));
    writeRo.write(patternBytes(3, 2 * MiB), 0);
    writeRo.close();
    const roDisk = VhdDisk.open(roPath);
    disks.push(mainDisk, otherDisk, roDisk);
    server = new NbdServer({ log: (line) => logs.push(line) });
    server.addExport(new NbdExport(mainDisk, { name: 'main', description: 'the abused disk' }));
    server.addExport(new NbdExport(otherDisk, { name: 'other', description: 'a bystander' }));
    server.addExport(new NbdExport(roDisk, { name: 'ro', readOnly: true }));
    socketPath = path.join(dir, 'nbd.sock');
    await server.listenUnix(socketPath);
    keeper = await NbdClient.open(socketPath, 'other', { metaContexts: ['base:allocation'] });
  });

  after(async () => {
    keeper?.destroy();
    await server?.close();
    for (const d of disks) d.close();
    if (mainPath) await assertValid(mainPath, 'main at the end');
    if (otherPath) await assertValid(otherPath, 'other at the end');
    removeDir(dir);
  });

  /**
   * After each case: only the keeper is still connected, it and a fresh connection to main read
   * the right data, nothing failed inside the server, and both writable disks pass checkDisk.
   */
  async function assertHealthy(what: string): Promise<void> {
    await waitFor(() => server.connectionCount === 1, 5000, `${what}: the bad connection to close (${server.connectionCount} connections)`);
    assert.equal(keeper.isClosed, false, `${what}: the keeper connection to "other" was closed`);
    assertSameBytes(await keeper.read(1 * MiB, 1 * MiB), other.read(1 * MiB, 1 * MiB), 1 * MiB, `${what}: "other" over the keeper connection`);
    await assertServes(keeper, other, `${what}: "other" over the keeper connection`);
    const extents = await keeper.blockStatus(0, 2 * MiB);
    assert.deepEqual(extents[0], { length: 1 * MiB, flags: STATE_HOLE | STATE_ZERO }, `${what}: "other"'s map`);
    const fresh = await NbdClient.open(socketPath, 'main', { structured: true });
    try {
      await assertServes(fresh, main, `${what}: "main" over a new connection`);
      await fresh.flush();
    } finally {
      assert.ok(await fresh.disconnect(), `${what}: the server did not close after DISC`);
    }
    await keeper.flush();
    const internal = logs.filter((l) => /internal error|request failed|flush at disconnect failed/.test(l));
    assert.deepEqual(internal, [], `${what}: the server logged failures`);
    await assertValid(mainPath, what);
    await assertValid(otherPath, what);
  }

  /** A connection that has sent its client flags, ready for options. */
  async function negotiating(flags = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES): Promise<NbdClient> {
    const c = await NbdClient.connect(socketPath);
    assert.equal(c.serverFlags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 'server handshake flags');
    c.sendClientFlags(flags);
    return c;
  }

  describe('handshake', () => {
    it('drops a client that sends unknown client flags', async () => {
      for (const flags of [1 << 2, FLAG_FIXED_NEWSTYLE | 0x80000000, 0xffffffff]) {
        const c = await negotiating(flags);
        c.sendOption(Opt.LIST);
        await assertClosed(c, `client flags 0x${flags.toString(16)}`);
        assert.equal(c.available, 0, `client flags 0x${flags.toString(16)}: the server answered before closing`);
      }
      await assertHealthy('unknown client flags');
    });

    it('drops a client whose option lacks the IHAVEOPT magic', async () => {
      const c = await negotiating();
      c.sendOption(Opt.GO, infoData('main'), { magic: IHAVEOPT ^ 1n });
      await assertClosed(c, 'option with a bad magic');
      assert.equal(c.available, 0, 'the server answered an option with a bad magic');
      // Also after a good option.
      const d = await negotiating();
      await d.list();
      d.sendOption(Opt.LIST, Buffer.alloc(0), { magic: 0n });
      await assertClosed(d, 'second option with a zero magic');
      await assertHealthy('option without IHAVEOPT');
    });

    it('answers unknown options with ERR_UNSUP and stays usable', async () => {
      const c = await negotiating();
      for (const option of [0, 4, Opt.STARTTLS, Opt.EXTENDED_HEADERS, 12, 0x7777, 0xffffffff]) {
        await assertOptionError(c.option(option, Buffer.from('payload')), Rep.ERR_UNSUP, `option ${option}`);
      }
      assert.deepEqual((await c.list()).map((e) => e.name), ['main', 'other', 'ro']);
      await c.structuredReplies();
      const info = await c.go('main');
      assert.equal(info.size, main.size);
      assertSameBytes(await c.read(4 * MiB - 512, 8 * KiB), main.read(4 * MiB - 512, 8 * KiB), 4 * MiB - 512, 'main after unknown options');
      assert.ok(await c.disconnect());
      await assertHealthy('unknown options');
    });

    it('refuses oversized option data with ERR_TOO_BIG, skipping it, and stays usable', async () => {
      const c = await negotiating();
      for (const size of [MAX_OPTION + 1, 1 * MiB, 8 * MiB + 3]) {
        // The data is the start of a valid request, so a server that parsed it would answer otherwise.
        const data = Buffer.alloc(size);
        infoData('main').copy(data);
        await assertOptionError(c.option(Opt.INFO, data), Rep.ERR_TOO_BIG, `INFO with ${size} bytes of data`);
        await assertOptionError(c.option(0x4242, Buffer.alloc(size, 0x49)), Rep.ERR_TOO_BIG, `unknown option with ${size} bytes of data`);
      }
      // Exactly the maximum is read and judged: a malformed GO.
      await assertOptionError(c.option(Opt.GO, Buffer.alloc(MAX_OPTION)), Rep.ERR_INVALID, 'GO with 64 KiB of zeros');
      await c.go('main');
      assertSameBytes(await c.read(0, 64 * KiB), main.read(0, 64 * KiB), 0, 'main after oversized options');
      assert.ok(await c.disconnect());
      await assertHealthy('oversized options');
    });

    it('answers GO and INFO for an unknown export with ERR_UNKNOWN; a good name then works', async () => {
      const c = await negotiating();
      for (const name of ['nope', 'main ', 'MAIN', 'x'.repeat(4096)]) {
        await assertOptionError(c.go(name), Rep.ERR_UNKNOWN, `GO "${name.slice(0, 20)}"`);
        await assertOptionError(c.info(name), Rep.ERR_UNKNOWN, `INFO "${name.slice(0, 20)}"`);
      }
      const info = await c.info('ro', [InfoType.NAME, InfoType.BLOCK_SIZE, InfoType.DESCRIPTION]);
      assert.equal(info.size, roSize);
      assert.equal(info.name, 'ro');
      assert.deepEqual(info.blockSizes, [1, 4096, MAX_REQUEST]);
      const go = await c.go('main', [InfoType.NAME, InfoType.DESCRIPTION]);
      assert.deepEqual(go, { size: main.size, flags: go.flags, name: 'main', description: 'the abused disk' });
      assertSameBytes(await c.read(6 * MiB, 1 * MiB), main.read(6 * MiB, 1 * MiB), 6 * MiB, 'main after ERR_UNKNOWN');
      assert.ok(await c.disconnect());
      await assertHealthy('unknown export');
    });

    it('answers malformed GO, INFO, LIST and meta context payloads with ERR_INVALID and stays usable', async () => {
      const c = await negotiating();
      const good = infoData('main', [InfoType.NAME]);
      const u32 = (v: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
      const malformed: Array<[string, Buffer]> = [
        ['no data', Buffer.alloc(0)],
        ['only a name length', u32(4)],
        ['a name longer than the data', Buffer.concat([u32(100), Buffer.from('main'), Buffer.alloc(2)])],
        ['a huge name length', Buffer.concat([u32(0xffffffff), Buffer.from('main'), Buffer.alloc(2)])],
        ['a name over 4096 bytes', infoData('m'.repeat(4097))],
        ['no info count', Buffer.concat([u32(4), Buffer.from('main')])],
        ['more info requests counted than sent', Buffer.concat([good.subarray(0, good.length - 2), Buffer.from([0, 5]), Buffer.alloc(2)])],
        ['a trailing byte', Buffer.concat([good, Buffer.alloc(1)])],
      ];
      for (const [what, data] of malformed) {
        await assertOptionError(c.option(Opt.GO, data), Rep.ERR_INVALID, `GO with ${what}`);
        await assertOptionError(c.option(Opt.INFO, data), Rep.ERR_INVALID, `INFO with ${what}`);
      }
      await assertOptionError(c.option(Opt.LIST, Buffer.from('x')), Rep.ERR_INVALID, 'LIST with data');
      await assertOptionError(c.option(Opt.STRUCTURED_REPLY, Buffer.from('x')), Rep.ERR_INVALID, 'STRUCTURED_REPLY with data');
      const meta = metaContextData('main', ['base:allocation']);
      await assertOptionError(c.option(Opt.SET_META_CONTEXT, meta), Rep.ERR_INVALID, 'SET_META_CONTEXT before STRUCTURED_REPLY');
      await c.structuredReplies();
      for (const [what, data] of [
        ['a truncated query', meta.subarray(0, meta.length - 1)],
        ['a trailing byte', Buffer.concat([meta, Buffer.alloc(1)])],
        ['more queries counted than sent', Buffer.concat([meta.subarray(0, 8), u32(2), meta.subarray(12)])],
      ] as Array<[string, Buffer]>) {
        await assertOptionError(c.option(Opt.SET_META_CONTEXT, data), Rep.ERR_INVALID, `SET_META_CONTEXT with ${what}`);
        await assertOptionError(c.option(Opt.LIST_META_CONTEXT, data), Rep.ERR_INVALID, `LIST_META_CONTEXT with ${what}`);
      }
      await assertOptionError(c.setMetaContext('nope', ['base:allocation']), Rep.ERR_UNKNOWN, 'SET_META_CONTEXT for an unknown export');
      assert.deepEqual([...(await c.setMetaContext('main', ['base:allocation']))], [['base:allocation', 1]]);
      await c.go('main');
      assert.deepEqual(await c.blockStatus(8 * MiB - 512, 1024), [{ length: 512, flags: 0 }, { length: 512, flags: STATE_HOLE | STATE_ZERO }]);
      assert.ok(await c.disconnect());
      await assertHealthy('malformed payloads');
    });

    it('lists every export with LIST, as often as asked', async () => {
      const c = await negotiating();
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await c.list(), [
          { name: 'main', description: 'the abused disk' },
          { name: 'other', description: 'a bystander' },
          { name: 'ro', description: '' },
        ]);
      }
      const contexts = await c.setMetaContext('main', [], Opt.LIST_META_CONTEXT);
      assert.deepEqual([...contexts.keys()], ['base:allocation']);
      c.destroy();
      await assertHealthy('LIST');
    });

    it('acknowledges ABORT and closes the connection', async () => {
      const c = await negotiating();
      await c.list();
      const reply = await c.abort();
      assert.deepEqual({ option: reply.option, type: reply.type }, { option: Opt.ABORT, type: Rep.ACK });
      await assertClosed(c, 'after ABORT');
      // ABORT as the very first option too.
      const d = await negotiating();
      assert.equal((await d.abort()).type, Rep.ACK);
      await assertClosed(d, 'after a first ABORT');
      await assertHealthy('ABORT');
    });

    it('serves the legacy EXPORT_NAME path, with and without the 124 zeros, and drops an unknown name', async () => {
      for (const flags of [FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, FLAG_FIXED_NEWSTYLE]) {
        const c = await negotiating(flags);
        const info = await c.exportName('main');
        assert.equal(info.size, main.size);
        assert.equal(info.flags & (TFlag.HAS_FLAGS | TFlag.READ_ONLY | TFlag.SEND_FLUSH), TFlag.HAS_FLAGS | TFlag.SEND_FLUSH);
        const reply = await c.request(Cmd.READ, 2 * MiB - 100, 300);
        assert.equal(reply.structured, false);
        assertSameBytes(reply.data!, main.read(2 * MiB - 100, 300), 2 * MiB - 100, 'main through EXPORT_NAME');
        // EXPORT_NAME negotiates no meta context: BLOCK_STATUS is refused.
        assertReplyError(await c.request(Cmd.BLOCK_STATUS, 0, 4096), Err.EINVAL, 'BLOCK_STATUS after EXPORT_NAME');
        assert.ok(await c.disconnect());
      }
      const d = await negotiating();
      assert.equal((await d.exportName('')).size, main.size, 'the default export "" is main');
      // Raw requests and replies: two READs and a bad one under chosen handles (small requests
      // are answered in arrival order by this server, so the replies are read in turn).
      d.sendRequest(Cmd.READ, 0, 4096, { handle: 7n });
      d.sendRequest(Cmd.READ, 4096, 512, { handle: 2n ** 64n - 1n, flags: CmdFlag.FUA });
      d.sendRequest(Cmd.READ, 8192, 512, { handle: 8n });
      const first = await d.readRawReply();
      assert.deepEqual([first.structured, first.error, first.handle], [false, 0, 7n]);
      assertSameBytes(await d.readBytes(4096), main.read(0, 4096), 0, 'main as the default export');
      const refused = await d.readRawReply();
      assert.deepEqual([refused.structured, refused.error, refused.handle], [false, Err.EINVAL, 2n ** 64n - 1n], 'a READ with FUA');
      const third = await d.readRawReply();
      assert.deepEqual([third.error, third.handle], [0, 8n]);
      assertSameBytes(await d.readBytes(512), main.read(8192, 512), 8192, 'main as the default export');
      d.destroy();
      const e = await negotiating();
      e.sendOption(Opt.EXPORT_NAME, Buffer.from('nope'));
      await assertClosed(e, 'EXPORT_NAME of an unknown export');
      assert.equal(e.available, 0, 'the server answered EXPORT_NAME of an unknown export');
      const f = await negotiating();
      f.sendOption(Opt.EXPORT_NAME, Buffer.alloc(0), { length: 5000 });
      await assertClosed(f, 'EXPORT_NAME of 5000 bytes');
      await assertHealthy('EXPORT_NAME');
    });
  });

  describe('transmission', () => {
    it('drops a client that sends a request without the request magic', async () => {
      const c = await NbdClient.open(socketPath, 'main');
      await c.read(0, 4096);
      c.sendRequest(Cmd.READ, 0, 4096, { magic: REQUEST_MAGIC ^ 0x100 });
      await assertClosed(c, 'request with a bad magic');
      assert.equal(c.available, 0, 'the server answered a request with a bad magic');
      // Garbage that is not even a whole header, then the close.
      const d = await NbdClient.open(socketPath, 'main', { structured: true });
      d.send(Buffer.from('GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n'));
      await assertClosed(d, 'an HTTP request in transmission');
      await assertHealthy('bad request magic');
    });

    it('refuses requests past the end: READ with EINVAL, WRITE and WRITE_ZEROES with ENOSPC', async () => {
      for (const structured of [false, true]) {
        const c = await NbdClient.open(socketPath, 'main', { structured });
        const size = main.size;
        const cases: Array<[number, number | bigint, number, number]> = [
          [Cmd.READ, size - 512, 1024, Err.EINVAL],
          [Cmd.READ, size, 1, Err.EINVAL],
          [Cmd.READ, 2n ** 63n, 512, Err.EINVAL],
          [Cmd.READ, 2n ** 64n - 512n, 1024, Err.EINVAL],
          [Cmd.WRITE, size - 512, 1024, Err.ENOSPC],
          [Cmd.WRITE, 2n ** 64n - 1n, 2, Err.ENOSPC],
          [Cmd.WRITE_ZEROES, size - 4096, 8192, Err.ENOSPC],
          [Cmd.TRIM, size, 4096, Err.EINVAL],
          [Cmd.BLOCK_STATUS, size, 4096, Err.EINVAL],
          [Cmd.READ, 0, 0, Err.EINVAL],
          [Cmd.WRITE, 0, 0, Err.EINVAL],
        ];
        // Pipelined, with a good READ after each bad one: a WRITE's payload must be consumed.
        const replies = cases.map(([cmd, offset, length]) => {
          const data = cmd === Cmd.WRITE ? Buffer.alloc(length, 0xee) : undefined;
          return [c.request(cmd, offset, length, data), c.request(Cmd.READ, 8 * MiB - 4096, 8192)] as const;
        });
        for (const [i, [bad, good]] of replies.entries()) {
          const [cmd, offset, length, errno] = cases[i];
          assertReplyError(await bad, errno, `${structured ? 'structured' : 'simple'}: command ${cmd} of ${length} bytes at ${offset}`);
          const read = await good;
          assertReplyError(read, 0, 'the READ after it');
          assertSameBytes(read.data!, main.read(8 * MiB - 4096, 8192), 8 * MiB - 4096, 'the READ after it');
        }
        assertSameBytes(await c.read(size - 4096, 4096), main.read(size - 4096, 4096), size - 4096, 'the end of main');
        assert.ok(await c.disconnect());
      }
      await assertHealthy('past the end');
    });

    it('refuses a READ larger than 32 MiB with EINVAL, and serves one of exactly 32 MiB', async () => {
      const c = await NbdClient.open(socketPath, 'main', { structured: true });
      for (const length of [MAX_REQUEST + 1, MAX_REQUEST + 512, MAX_REQUEST * 2 - 4096]) {
        assertReplyError(await c.request(Cmd.READ, 0, length), Err.EINVAL, `READ of ${length} bytes`);
      }
      assertReplyError(await c.request(Cmd.READ, 0, 0xffffffff), Err.EINVAL, 'READ of 4 GiB - 1');
      const whole = await c.read(4 * MiB, MAX_REQUEST);
      assertSameBytes(whole, main.read(4 * MiB, MAX_REQUEST), 4 * MiB, 'a 32 MiB READ');
      const d = await NbdClient.open(socketPath, 'main');
      assertReplyError(await d.request(Cmd.READ, 0, MAX_REQUEST + 512), Err.EINVAL, 'READ of 32 MiB + 512 (simple replies)');
      assertSameBytes(await d.read(0, 4096), main.read(0, 4096), 0, 'a READ after it');
      assert.ok(await c.disconnect());
      assert.ok(await d.disconnect());
      await assertHealthy('oversized READ');
    });

    it('drops a client that sends a WRITE larger than 32 MiB, without applying any of it', async () => {
      const c = await NbdClient.open(socketPath, 'main');
      c.sendRequest(Cmd.WRITE, 0, MAX_REQUEST + 512);
      c.send(Buffer.alloc(1 * MiB, 0xab));
      await assertClosed(c, 'WRITE of 32 MiB + 512');
      const d = await NbdClient.open(socketPath, 'main');
      d.sendRequest(Cmd.WRITE, 4096, 0xffffffff, { data: Buffer.alloc(64 * KiB, 0xab) });
      await assertClosed(d, 'WRITE of 4 GiB - 1');
      await assertHealthy('oversized WRITE');
    });

    it('refuses unknown commands with EINVAL and stays usable', async () => {
      for (const structured of [false, true]) {
        const c = await NbdClient.open(socketPath, 'main', { structured });
        for (const cmd of [Cmd.CACHE, 8, 9, 0x1234, 0xffff]) {
          assertReplyError(await c.request(cmd, 0, 4096), Err.EINVAL, `command ${cmd}`);
          assertSameBytes(await c.read(0, 4096), main.read(0, 4096), 0, `a READ after command ${cmd}`);
        }
        assert.ok(await c.disconnect());
      }
      await assertHealthy('unknown commands');
    });

    it('refuses invalid command flags with EINVAL; a refused WRITE writes nothing', async () => {
      const c = await NbdClient.open(socketPath, 'main', { metaContexts: ['base:allocation'] });
      const cases: Array<[number, number]> = [
        [Cmd.READ, CmdFlag.FUA], [Cmd.READ, CmdFlag.NO_HOLE], [Cmd.READ, CmdFlag.REQ_ONE], [Cmd.READ, 0x8000],
        [Cmd.WRITE, CmdFlag.DF], [Cmd.WRITE, CmdFlag.NO_HOLE], [Cmd.WRITE, CmdFlag.FAST_ZERO],
        [Cmd.FLUSH, CmdFlag.FUA], [Cmd.TRIM, CmdFlag.NO_HOLE], [Cmd.WRITE_ZEROES, CmdFlag.FAST_ZERO], [Cmd.WRITE_ZEROES, CmdFlag.DF],
        [Cmd.BLOCK_STATUS, CmdFlag.FUA], [Cmd.BLOCK_STATUS, 0xffff],
      ];
      for (const [cmd, flags] of cases) {
        const data = cmd === Cmd.WRITE ? Buffer.alloc(8192, 0x5a) : undefined;
        const reply = await c.request(cmd, 1 * MiB, 8192, data, { flags });
        assertReplyError(reply, Err.EINVAL, `command ${cmd} with flags 0x${flags.toString(16)}`);
        assertSameBytes(await c.read(1 * MiB, 8192), main.read(1 * MiB, 8192), 1 * MiB, `main after command ${cmd} with flags 0x${flags.toString(16)}`);
      }
      // The flags each command does take are accepted.
      const data = patternBytes(77, 8192);
      await c.write(1 * MiB, data, CmdFlag.FUA);
      main.write(1 * MiB, data);
      assert.ok((await c.read(1 * MiB, 8192, CmdFlag.DF)).equals(data));
      assert.equal((await c.blockStatus(0, 4096, CmdFlag.REQ_ONE)).length, 1);
      assert.ok(await c.disconnect());
      await assertHealthy('invalid flags');
    });

    it('refuses WRITE, TRIM and WRITE_ZEROES on a read-only export with EPERM', async () => {
      for (const structured of [false, true]) {
        const c = await NbdClient.open(socketPath, 'ro', { structured });
        const flags = c.export!.flags;
        assert.ok(flags & TFlag.READ_ONLY, 'the read-only export does not say so');
        assert.equal(flags & (TFlag.SEND_TRIM | TFlag.SEND_WRITE_ZEROES), 0, 'the read-only export offers TRIM or WRITE_ZEROES');
        const requests = [
          c.request(Cmd.WRITE, 0, 4096, Buffer.alloc(4096, 0x11)),
          c.request(Cmd.WRITE, 0, 4096, Buffer.alloc(4096, 0x11), { flags: CmdFlag.FUA }),
          c.request(Cmd.WRITE, 5 * MiB, 1 * MiB, Buffer.alloc(1 * MiB, 0x11)),
          c.request(Cmd.TRIM, 0, 2 * MiB),
          c.request(Cmd.WRITE_ZEROES, 0, 2 * MiB),
          c.request(Cmd.WRITE_ZEROES, 4096, 512, undefined, { flags: CmdFlag.NO_HOLE }),
        ];
        for (const [i, r] of requests.entries()) assertReplyError(await r, Err.EPERM, `${structured ? 'structured' : 'simple'}: write request #${i} on ro`);
        await c.flush();
        assertSameBytes(await c.read(0, 2 * MiB + 4096), ro.read(0, 2 * MiB + 4096), 0, 'ro after refused writes');
        assertSameBytes(await c.read(5 * MiB, 1 * MiB), ro.read(5 * MiB, 1 * MiB), 5 * MiB, 'ro after refused writes');
        assert.ok(await c.disconnect());
      }
      await assertHealthy('read-only export');
    });

    it('refuses BLOCK_STATUS with EINVAL unless base:allocation was negotiated for this export', async () => {
      const plain = await NbdClient.open(socketPath, 'main');
      assertReplyError(await plain.request(Cmd.BLOCK_STATUS, 0, 4096), Err.EINVAL, 'BLOCK_STATUS with simple replies');
      const structured = await NbdClient.open(socketPath, 'main', { structured: true });
      const reply = await structured.request(Cmd.BLOCK_STATUS, 0, 4096);
      assertReplyError(reply, Err.EINVAL, 'BLOCK_STATUS without SET_META_CONTEXT');
      assert.equal(reply.structured, true, 'a refused BLOCK_STATUS on a structured connection is not a structured error');
      // Selected for another export, then GO main: the selection does not carry over.
      const moved = await NbdClient.connect(socketPath);
      moved.sendClientFlags();
      await moved.structuredReplies();
      assert.equal((await moved.setMetaContext('other', ['base:allocation'])).size, 1);
      await moved.go('main');
      assertReplyError(await moved.request(Cmd.BLOCK_STATUS, 0, 4096), Err.EINVAL, 'BLOCK_STATUS with a context selected for "other"');
      // Asking only for contexts the server lacks selects none.
      const none = await NbdClient.connect(socketPath);
      none.sendClientFlags();
      await none.structuredReplies();
      assert.equal((await none.setMetaContext('main', ['qemu:dirty-bitmap:x', 'base:'])).size, 0);
      await none.go('main');
      assertReplyError(await none.request(Cmd.BLOCK_STATUS, 0, 4096), Err.EINVAL, 'BLOCK_STATUS with no context selected');
      for (const c of [plain, structured, moved, none]) {
        assertSameBytes(await c.read(0, 4096), main.read(0, 4096), 0, 'a READ after a refused BLOCK_STATUS');
        assert.ok(await c.disconnect());
      }
      await assertHealthy('BLOCK_STATUS without a context');
    });

    it('returns exactly one extent for BLOCK_STATUS with REQ_ONE, and a contiguous map without', async () => {
      const c = await NbdClient.open(socketPath, 'main', { metaContexts: ['base:allocation'] });
      const hole = STATE_HOLE | STATE_ZERO;
      // Data up to 8 MiB, then unallocated blocks.
      const full = await c.blockStatus(8 * MiB - 4096, 1 * MiB);
      assert.deepEqual(full, [{ length: 4096, flags: 0 }, { length: 1 * MiB - 4096, flags: hole }]);
      assert.deepEqual(await c.blockStatus(8 * MiB - 4096, 1 * MiB, CmdFlag.REQ_ONE), [{ length: 4096, flags: 0 }]);
      assert.deepEqual(await c.blockStatus(8 * MiB, 1 * MiB, CmdFlag.REQ_ONE), [{ length: 1 * MiB, flags: hole }]);
      assert.deepEqual(await c.blockStatus(100, 1000, CmdFlag.REQ_ONE), [{ length: 1000, flags: 0 }]);
      const whole = await c.blockStatus(0, main.size);
      assert.equal(whole.reduce((n, e) => n + e.length, 0), main.size, 'the map of the whole disk does not add up');
      for (const [offset, length] of [[0, main.size], [3 * MiB + 7, 20 * MiB], [main.size - 1, 1]]) {
        const one = await c.blockStatus(offset, length, CmdFlag.REQ_ONE);
        assert.equal(one.length, 1, `REQ_ONE at ${offset}+${length} gave ${one.length} extents`);
        assert.ok(one[0].length > 0 && one[0].length <= length, `REQ_ONE extent of ${one[0].length} bytes for ${length} asked`);
      }
      assert.ok(await c.disconnect());
      await assertHealthy('REQ_ONE');
    });

    it('applies nothing of a WRITE whose payload is cut off by a disconnect', async () => {
      const c = await NbdClient.open(socketPath, 'main');
      const probe = await NbdClient.open(socketPath, 'main', { metaContexts: ['base:allocation'] });
      const cases: Array<[number, number, number]> = [
        [2 * MiB - 64 * KiB, 1 * MiB, 512 * KiB], // over allocated data, across a block boundary
        [12 * MiB, 2 * MiB, 2 * MiB - 1], // a whole unallocated block, one byte short
        [30 * MiB + 100, 4096, 28], // unaligned, only the header's worth
      ];
      for (const [offset, length, sent] of cases) {
        const d = await NbdClient.open(socketPath, 'main');
        d.sendRequest(Cmd.WRITE, offset, length, { data: Buffer.alloc(sent, 0xc3) });
        await new Promise((resolve) => setTimeout(resolve, 20));
        d.destroy();
        await waitFor(() => server.connectionCount === 3, 5000, 'the cut-off writer to be gone');
        assertSameBytes(await probe.read(offset, length), main.read(offset, length), offset, `the range of a cut-off WRITE of ${sent}/${length} bytes`);
      }
      assert.deepEqual(await probe.blockStatus(12 * MiB, 2 * MiB), [{ length: 2 * MiB, flags: STATE_HOLE | STATE_ZERO }], 'a cut-off WRITE allocated a block');
      assertSameBytes(await c.read(2 * MiB - 64 * KiB, 1 * MiB), main.read(2 * MiB - 64 * KiB, 1 * MiB), 2 * MiB - 64 * KiB, 'over another connection');
      assert.ok(await c.disconnect());
      assert.ok(await probe.disconnect());
      await assertHealthy('cut-off WRITE');
    });

    it('answers pipelined requests under their own handles with the right data, large reads included', async () => {
      const c = await NbdClient.open(socketPath, 'main', { metaContexts: ['base:allocation'] });
      const handles = [0n, 1n, 2n ** 64n - 1n, 2n ** 63n, 0xdeadbeefcafebaben, 0x0102030405060708n];
      let nextHandle = 0;
      const handle = (): bigint => (nextHandle < handles.length ? handles[nextHandle++] : BigInt(0x5000 + nextHandle++) << 32n);
      const checks: Array<Promise<void>> = [];
      const expectRead = (offset: number, length: number, what: string): void => {
        const expected = main.read(offset, length); // as of now: the server executes in order
        const h = handle();
        checks.push(c.request(Cmd.READ, offset, length, undefined, { handle: h }).then((r) => {
          assert.equal(r.handle, h);
          assertReplyError(r, 0, what);
          assertSameBytes(r.data!, expected, offset, what);
        }));
      };
      const expectOk = (command: number, offset: number, length: number, data?: Buffer, flags = 0): void => {
        const h = handle();
        checks.push(c.request(command, offset, length, data, { handle: h, flags }).then((r) => {
          assert.equal(r.handle, h);
          assertReplyError(r, 0, `command ${command} at ${offset}`);
        }));
        if (command === Cmd.WRITE) main.write(offset, data!);
        if (command === Cmd.WRITE_ZEROES || command === Cmd.TRIM) main.write(offset, Buffer.alloc(length));
      };
      // No request overlaps an earlier READ of 128 KiB or more: those are read in the thread pool
      // while later requests run, and NBD does not order requests in flight.
      // Eight 1 MiB reads (served in the thread pool), then small ones that may overtake them.
      for (let i = 0; i < 8; i++) expectRead(i * MiB, 1 * MiB, `1 MiB read #${i}`);
      for (let i = 0; i < 64; i++) expectRead((i * 97 * 1024 + i) % (8 * MiB), 4096 + i, `small read #${i}`);
      // Writes into a new block, read back (in order) by small and large reads; an unaligned write.
      const fresh = patternBytes(50, 256 * KiB);
      expectOk(Cmd.WRITE, 20 * MiB + 64 * KiB, fresh.length, fresh);
      expectRead(20 * MiB, 1 * MiB, 'a 1 MiB read over a new write');
      expectRead(20 * MiB + 64 * KiB - 100, 200, 'a small read over a new write');
      const odd = patternBytes(51, 1000);
      expectOk(Cmd.WRITE, 8 * MiB + 3, odd.length, odd);
      expectRead(8 * MiB, 4096, 'an unaligned write');
      const ten = patternBytes(53, 64 * KiB);
      expectOk(Cmd.WRITE, 10 * MiB, ten.length, ten);
      expectOk(Cmd.WRITE_ZEROES, 10 * MiB + 512, 3072);
      expectRead(10 * MiB, 8192, 'after WRITE_ZEROES');
      const block = patternBytes(52, 2 * MiB);
      expectOk(Cmd.WRITE, 14 * MiB, block.length, block, CmdFlag.FUA);
      expectRead(14 * MiB - 4096, 2 * MiB + 8192, 'a whole written block');
      expectOk(Cmd.WRITE, 16 * MiB, block.length, block);
      expectOk(Cmd.TRIM, 16 * MiB, 2 * MiB);
      expectRead(16 * MiB, 2 * MiB, 'a trimmed whole block');
      expectOk(Cmd.FLUSH, 0, 0);
      const h = handle();
      checks.push(c.request(Cmd.BLOCK_STATUS, 14 * MiB, 8 * MiB, undefined, { handle: h }).then((r) => {
        assert.equal(r.handle, h);
        assert.deepEqual(r.extents?.get(1), [
          { length: 2 * MiB, flags: 0 }, { length: 4 * MiB, flags: STATE_HOLE | STATE_ZERO }, { length: 2 * MiB, flags: 0 },
        ], 'the map after the pipelined writes');
      }));
      for (let i = 0; i < 8; i++) expectRead(7 * MiB - i * MiB, 1 * MiB, `late 1 MiB read #${i}`);
      const total = checks.length;
      await Promise.all(checks);
      assert.equal(c.completed.length, total);
      assert.equal(new Set(c.completed).size, total, 'a handle was answered twice');
      assert.equal(c.protocolError, null);
      assert.ok(await c.disconnect());
      await assertHealthy('pipelined requests');
    });

    it('sends every reply due before DISC, even to a client slow to read them, then closes', async () => {
      for (const structured of [false, true]) {
        const c = await NbdClient.open(socketPath, 'main', { structured });
        c.pauseReading();
        const reads = Array.from({ length: 12 }, (_, i) => c.request(Cmd.READ, (i % 8) * MiB, i < 8 ? 1 * MiB : 64 * KiB));
        const data = patternBytes(60, 64 * KiB);
        // Not over the reads: an in-flight READ may see a later overlapping WRITE (NBD orders no in-flight requests).
        const write = c.request(Cmd.WRITE, 9 * MiB, data.length, data);
        c.sendRequest(Cmd.DISC, 0, 0);
        await new Promise((resolve) => setTimeout(resolve, 200));
        c.resumeReading();
        for (const [i, r] of (await Promise.all(reads)).entries()) {
          const offset = (i % 8) * MiB;
          assertReplyError(r, 0, `read #${i} before DISC`);
          assertSameBytes(r.data!, main.read(offset, r.data!.length), offset, `read #${i} before DISC`);
        }
        assertReplyError(await write, 0, 'the write before DISC');
        main.write(9 * MiB, data);
        await assertClosed(c, 'after DISC');
      }
      await assertHealthy('DISC');
    });

    it('stops working for a client that has gone, whatever it left buffered', async () => {
      // A thousand 32 MiB READs (32 GB to read) and the client vanishes: the server must not read on for nobody.
      const c = await NbdClient.open(socketPath, 'main', { structured: true });
      c.cork();
      for (let i = 0; i < 1000; i++) c.sendRequest(Cmd.READ, (i % 4) * MiB, MAX_REQUEST);
      c.uncork();
      await new Promise((resolve) => setTimeout(resolve, 30));
      c.destroy();
      const started = performance.now();
      assertSameBytes(await keeper.read(0, 1 * MiB), other.read(0, 1 * MiB), 0, 'the keeper while a gone client\'s READs are pending');
      await waitFor(() => server.connectionCount === 1, 3000, 'the gone reader\'s connection to end');
      // Half a million LIST options, the replies unread, and the client vanishes.
      const d = await negotiating();
      const one = Buffer.alloc(16);
      one.writeBigUInt64BE(IHAVEOPT, 0);
      one.writeUInt32BE(Opt.LIST, 8);
      d.pauseReading();
      const batch = Buffer.concat(Array.from({ length: 10_000 }, () => one));
      for (let i = 0; i < 50; i++) d.send(batch);
      await new Promise((resolve) => setTimeout(resolve, 100));
      d.destroy();
      await waitFor(() => server.connectionCount === 1, 3000, 'the gone option sender\'s connection to end');
      assert.ok(performance.now() - started < 5000);
      await assertHealthy('gone clients');
    });

    it('keeps serving while many bad clients misbehave at once', async () => {
      const bad = async (i: number): Promise<void> => {
        const c = await NbdClient.connect(socketPath);
        switch (i % 5) {
          case 0: c.sendClientFlags(0x40); break;
          case 1: c.sendClientFlags(); c.sendOption(Opt.GO, infoData('main'), { magic: 1n }); break;
          case 2: c.sendClientFlags(); c.sendOption(Opt.INFO, Buffer.alloc(0), { length: 1 * MiB }); c.send(Buffer.alloc(1000)); c.destroy(); return;
          case 3: c.sendClientFlags(); c.sendOption(Opt.EXPORT_NAME, Buffer.from('main')); await c.readBytes(10); c.sendRequest(Cmd.WRITE, 0, MAX_REQUEST * 2); break;
          default: c.sendClientFlags(); await c.go('main'); c.sendRequest(Cmd.READ, 0, 4096, { magic: 0 }); break;
        }
        await assertClosed(c, `bad client #${i}`);
      };
      const good = async (): Promise<void> => {
        const c = await NbdClient.open(socketPath, 'main', { structured: true });
        for (let i = 0; i < 20; i++) assertSameBytes(await c.read(i * 256 * KiB, 256 * KiB), main.read(i * 256 * KiB, 256 * KiB), i * 256 * KiB, 'a good client among bad ones');
        assert.ok(await c.disconnect());
      };
      await Promise.all([...Array.from({ length: 40 }, (_, i) => bad(i)), good(), good(), assertServes(keeper, other, 'the keeper among bad clients')]);
      await assertHealthy('many bad clients');
    });
  });

  describe('listening', () => {
    it('creates the unix socket with mode 0600', () => {
      assert.equal(fs.statSync(socketPath).mode & 0o777, 0o600);
    });

    it('refuses to listen on TCP anywhere but loopback, and serves on loopback', async () => {
      const probe = new NbdServer();
      try {
        for (const host of ['0.0.0.0', '::', '192.0.2.1', 'example.com', '127.0.0.2', '']) {
          await assert.rejects(probe.listenTcp(0, host), /loopback/, `listenTcp on "${host}"`);
        }
      } finally {
        await probe.close();
      }
      const port = await server.listenTcp(0);
      const c = await NbdClient.open({ port }, 'main', { structured: true });
      assertSameBytes(await c.read(5 * MiB, 1 * MiB), main.read(5 * MiB, 1 * MiB), 5 * MiB, 'main over TCP');
      const bad = await NbdClient.connect({ port });
      bad.sendClientFlags(0x10);
      await assertClosed(bad, 'bad client flags over TCP');
      assert.ok(await c.disconnect());
      await assertHealthy('TCP');
    });
  });

  describe('a spawned "vsctl vhd serve" under floods', () => {
    let floodPath: string;
    let content: Buffer;

    before(async () => {
      floodPath = path.join(dir, 'flood.vhd');
      await createDynamic(floodPath, { size: 64 * MiB });
      const disk = VhdDisk.open(floodPath, { writable: true });
      content = patternBytes(9, 32 * MiB);
      disk.write(content, 0);
      disk.close();
    });

    /**
     * Runs `abuse` against a fresh server (so each flood's memory is measured on its own) with
     * an observer connection; then the server must still serve the observer, stop cleanly on
     * SIGTERM, and leave a valid disk that holds what it held.
     */
    async function withServer(what: string, abuse: (served: ServedVhd, observe: (when: string) => Promise<void>) => Promise<void>): Promise<void> {
      const served = await serveVhd(floodPath, { socket: path.join(dir, 'flood.sock'), exportName: 'flood' });
      try {
        assert.equal(fs.statSync(served.ready.socket!).mode & 0o777, 0o600, 'the socket is not mode 0600');
        const observer = await NbdClient.open(served.ready.socket!, 'flood', { structured: true });
        const observe = async (when: string): Promise<void> => {
          assertAlive(served, `${what}, ${when}`);
          for (const offset of [0, 7 * MiB + 512, 31 * MiB]) {
            assertSameBytes(await observer.read(offset, 1 * MiB), content.subarray(offset, offset + MiB), offset, `${what}, ${when}: the observer's read`);
          }
        };
        await abuse(served, observe);
        await observe('afterwards');
        assert.ok(await observer.disconnect(), `${what}: no close after DISC`);
        served.child.kill('SIGTERM');
        const [code, signal] = (await once(served.child, 'exit')) as [number | null, string | null];
        assert.equal(code, 0, `${what}: vsctl vhd serve exited ${code ?? signal} on SIGTERM: ${served.stderr()}`);
        assert.doesNotMatch(served.stderr(), /internal error|request failed/, `${what}: the server logged failures`);
        assert.ok(!fs.existsSync(`${floodPath}.lock`), `${what}: the write lock is left behind`);
        assert.ok(!fs.existsSync(served.ready.socket!), `${what}: the socket file is left behind`);
      } finally {
        if (served.child.exitCode === null && served.child.signalCode === null) {
          served.child.kill('SIGKILL');
          await once(served.child, 'exit');
        }
      }
      await assertValid(floodPath, what);
      const disk = VhdDisk.open(floodPath);
      try {
        assertSameBytes(disk.read(0, content.length), content, 0, `${what}: the disk`);
        assert.ok(!disk.isAllocated(content.length, disk.size - content.length), `${what}: blocks were allocated past the data`);
      } finally {
        disk.close();
      }
    }

    it('survives protocol violations and cut-off writes', async () => {
      await withServer('protocol violations', async (served, observe) => {
        const a = await NbdClient.open(served.ready.socket!, 'flood');
        a.sendRequest(Cmd.READ, 0, 4096, { magic: 0x12345678 });
        await assertClosed(a, 'bad request magic');
        const b = await NbdClient.open(served.ready.socket!, 'flood');
        b.sendRequest(Cmd.WRITE, 0, MAX_REQUEST + 1, { data: Buffer.alloc(4 * MiB, 1) });
        await assertClosed(b, 'WRITE larger than 32 MiB');
        const d = await NbdClient.open(served.ready.socket!, 'flood');
        d.sendRequest(Cmd.WRITE, 4 * MiB, 4 * MiB, { data: Buffer.alloc(4 * MiB - 1, 2) });
        await new Promise((resolve) => setTimeout(resolve, 50));
        d.destroy();
        const e = await NbdClient.connect(served.ready.socket!);
        e.sendClientFlags(0xff);
        await assertClosed(e, 'bad client flags');
        const f = await NbdClient.connect(served.ready.socket!);
        f.sendClientFlags();
        f.sendOption(Opt.EXPORT_NAME, Buffer.from('nope'));
        await assertClosed(f, 'EXPORT_NAME of an unknown export');
        await new Promise((resolve) => setTimeout(resolve, 50));
        await observe('after the violations');
      });
    });

    it(`stays under ${RSS_LIMIT_MB} MB while a client pipelines 20000 READs (332 MiB of replies) without reading, then answers them all`, async (t) => {
      await withServer('READ flood', async (served, observe) => {
        const flooder = await NbdClient.open(served.ready.socket!, 'flood', { structured: true });
        const rss = watchRss(served.ready.pid);
        const before = rssMB(served.ready.pid);
        const READS = 20_000;
        const size = (i: number): number => (i % 1000 === 999 ? 1 * MiB : 16 * KiB);
        const offsetOf = (i: number): number => (i * 16 * KiB + (i % 7) * 512) % (content.length - 1 * MiB);
        flooder.pauseReading();
        flooder.cork();
        const replies: Array<Promise<Reply>> = [];
        for (let i = 0; i < READS; i++) replies.push(flooder.request(Cmd.READ, offsetOf(i), size(i)));
        flooder.uncork();
        const started = performance.now();
        // While the flooder reads nothing, the server must neither bloat nor stop serving others.
        while (performance.now() - started < 1500) {
          await observe('during the flood');
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        const pausedPeak = rss.peak();
        flooder.resumeReading();
        let bytes = 0;
        for (const [i, p] of replies.entries()) {
          const r = await p;
          assertReplyError(r, 0, `flooded READ #${i}`);
          const offset = offsetOf(i);
          if (!r.data!.equals(content.subarray(offset, offset + size(i)))) assertSameBytes(r.data!, content.subarray(offset, offset + size(i)), offset, `flooded READ #${i}`);
          bytes += r.data!.length;
        }
        const peak = rss.stop();
        t.diagnostic(`server VmRSS: ${before.toFixed(0)} MB before, peak ${pausedPeak.toFixed(0)} MB while the client read nothing, ` +
          `${peak.toFixed(0)} MB overall; ${(bytes / MiB).toFixed(0)} MiB of replies in ${(performance.now() - started).toFixed(0)} ms`);
        assert.ok(peak < RSS_LIMIT_MB, `the server's resident memory reached ${peak.toFixed(0)} MB during the READ flood`);
        assert.ok(await flooder.disconnect());
      });
    });

    it(`stays under ${RSS_LIMIT_MB} MB while a client pipelines 1.2 million small READs (tiny replies) without reading`, async (t) => {
      await withServer('small-reply flood', async (served, observe) => {
        const flooder = await NbdClient.open(served.ready.socket!, 'flood', { structured: true });
        const rss = watchRss(served.ready.pid);
        // 33.6 MB of READs of a hole, each answered by a 32-byte OFFSET_HOLE chunk: few bytes but
        // very many replies, which cost a server that counts only bytes far more than their size.
        const REQUESTS = 1_200_000;
        const HOLE = 48 * MiB;
        const requests = Buffer.alloc(28 * REQUESTS);
        for (let i = 0; i < REQUESTS; i++) {
          const at = 28 * i;
          requests.writeUInt32BE(REQUEST_MAGIC, at);
          requests.writeUInt16BE(Cmd.READ, at + 6);
          requests.writeUInt32BE(i, at + 12); // the handle
          requests.writeUInt32BE(HOLE + (i % 1024) * 512, at + 20); // the offset's low word
          requests.writeUInt32BE(512, at + 24);
        }
        flooder.pauseReading();
        flooder.send(requests);
        await new Promise((resolve) => setTimeout(resolve, 1000));
        await observe('during the flood');
        flooder.resumeReading();
        const started = performance.now();
        const seen = new Uint8Array(REQUESTS);
        for (let got = 0; got < REQUESTS;) {
          const n = Math.min(20_000, REQUESTS - got);
          const replies = await flooder.readBytes(n * 32);
          for (let at = 0; at < replies.length; at += 32) {
            const handle = replies.readUInt32BE(at + 12);
            const ok = replies.readUInt32BE(at) === STRUCTURED_REPLY_MAGIC && replies.readUInt16BE(at + 4) === CHUNK_DONE &&
              replies.readUInt16BE(at + 6) === Chunk.OFFSET_HOLE && replies.readUInt32BE(at + 8) === 0 && handle < REQUESTS &&
              replies.readUInt32BE(at + 16) === 12 && replies.readUInt32BE(at + 20) === 0 &&
              replies.readUInt32BE(at + 24) === HOLE + (handle % 1024) * 512 && replies.readUInt32BE(at + 28) === 512 && !seen[handle];
            if (!ok) assert.fail(`reply #${got + at / 32} is not a hole chunk for a pending READ: ${replies.subarray(at, at + 32).toString('hex')}`);
            seen[handle] = 1;
          }
          got += n;
        }
        const peak = rss.stop();
        t.diagnostic(`server VmRSS peak ${peak.toFixed(0)} MB; replies read in ${(performance.now() - started).toFixed(0)} ms`);
        assert.ok(peak < RSS_LIMIT_MB, `the server's resident memory reached ${peak.toFixed(0)} MB during the small-reply flood`);
        flooder.destroy();
      });
    });

    it(`stays under ${RSS_LIMIT_MB} MB while a client sends a million LIST options without reading the replies`, async (t) => {
      await withServer('option flood', async (served, observe) => {
        const flooder = await NbdClient.connect(served.ready.socket!);
        flooder.sendClientFlags();
        const rss = watchRss(served.ready.pid);
        const one = Buffer.alloc(16);
        one.writeBigUInt64BE(IHAVEOPT, 0);
        one.writeUInt32BE(Opt.LIST, 8);
        const batch = Buffer.concat(Array.from({ length: 10_000 }, () => one));
        flooder.pauseReading();
        for (let i = 0; i < 100; i++) flooder.send(batch);
        await new Promise((resolve) => setTimeout(resolve, 1500));
        await observe('during the flood');
        flooder.resumeReading();
        // The replies that come are well formed: SERVER "flood", then ACK, again and again.
        for (let i = 0; i < 1000; i++) {
          const server = await flooder.readOptionReply();
          assert.deepEqual([server.option, server.type, server.data.toString('utf8', 4, 9)], [Opt.LIST, Rep.SERVER, 'flood']);
          const ack = await flooder.readOptionReply();
          assert.deepEqual([ack.option, ack.type, ack.data.length], [Opt.LIST, Rep.ACK, 0]);
        }
        const peak = rss.stop();
        t.diagnostic(`server VmRSS peak ${peak.toFixed(0)} MB`);
        assert.ok(peak < RSS_LIMIT_MB, `the server's resident memory reached ${peak.toFixed(0)} MB during the option flood`);
        flooder.destroy();
      });
    });
  });
});
