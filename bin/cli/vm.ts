// "vsctl vm run|check": one VM from its configuration document, without vserverd. run keeps the
// VM in the foreground with COM1 on the terminal; check validates the document and shows what
// QEMU would be given.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { hardDisks, parseVmConfig, tapName, type VmConfig, VmConfigError } from '../../vmm/config.js';
import { chooseEngine } from '../../vmm/engine.js';
import { VmManager, WORKER_EXIT_MS } from '../../vmm/manager.js';
import { VmPaths } from '../../vmm/paths.js';
import { qemuArgs } from '../../vmm/qemu-args.js';
import { isActive, VmError, type VmStatus } from '../../vmm/state.js';
import { QEMU_USER } from '../../vmm/worker/user.js';
import type { Command, ParsedArgs } from './command.js';

const CTRL_C = 0x03;

function loadConfig(file: string): VmConfig {
  let document: unknown;
  try {
    document = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new VmError('VM_E_CONFIG_INVALID', `cannot read ${file}: ${(e as Error).message}`);
  }
  return parseVmConfig(document, path.dirname(path.resolve(file)));
}

/** Prints a refused document's problems one per line (or as JSON) and returns the exit status. */
function reportRefusal(e: unknown, args: ParsedArgs): number {
  if (!(e instanceof VmConfigError) && !(e instanceof VmError)) throw e;
  if (args.json) {
    const problems = e instanceof VmConfigError ? e.problems : undefined;
    console.log(JSON.stringify({ error: { code: e.code, message: e.message, problems } }, null, 2));
  } else if (e instanceof VmConfigError) {
    console.error('vsctl: the configuration is refused:');
    for (const p of e.problems) console.error(`  ${p.field}: ${p.message}`);
  } else {
    console.error(`vsctl: ${e.message} [${e.code}]`);
  }
  return 1;
}

/** The document named on the command line, or the exit status after its refusal was printed. */
function loadConfigOrReport(args: ParsedArgs): VmConfig | number {
  try {
    return loadConfig(args.positionals[0]);
  } catch (e) {
    return reportRefusal(e, args);
  }
}

function describe(status: VmStatus): string {
  const engine = status.state === 'Running' && status.engine ? ` on ${status.engine} (${status.engineReason})` : '';
  const why = status.crashed ? ` - crashed: ${status.crashed.reason}` : status.stopReason ? ` (${status.stopReason})` : '';
  return `${status.name} is ${status.state}${engine}${why}`;
}

/** COM1 on this terminal: keystrokes go to the guest, except Ctrl-C, which turns the VM off. */
function attachTerminal(consoleSocket: string, onCtrlC: () => void): () => void {
  const socket = net.connect(consoleSocket);
  socket.pipe(process.stdout);
  socket.on('error', () => {});
  const raw = process.stdin.isTTY === true;
  if (raw) process.stdin.setRawMode(true);
  const onInput = (data: Buffer): void => {
    const at = data.indexOf(CTRL_C);
    if (at >= 0) {
      if (at > 0) socket.write(data.subarray(0, at));
      onCtrlC();
      return;
    }
    socket.write(data);
  };
  process.stdin.on('data', onInput);
  return () => {
    process.stdin.off('data', onInput);
    if (raw) process.stdin.setRawMode(false);
    process.stdin.pause();
    socket.unpipe(process.stdout);
    socket.destroy();
  };
}

export const vmCommands: Command[] = [
  {
    name: 'run',
    usage: 'run CONFIG [--run-dir DIR]',
    summary: 'Run the VM described by CONFIG in the foreground: COM1 on this terminal, Ctrl-C turns it off.',
    details: [
      'The document format is in docs/vm-config.md. State changes are printed on stderr; the exit status is 0 when',
      'the VM stopped normally (turned off, shut down by its guest, saved) and 1 when it failed to start or crashed.',
      'If vsctl itself is killed, the VM is turned off. With --json, no console is attached and each state change is',
      'printed on stdout as one line of JSON.',
    ].join('\n'),
    positionals: { min: 1, max: 1 },
    options: {
      'run-dir': { type: 'string', valueName: 'DIR', description: 'where the worker keeps its sockets and status (default: $VSERVER_RUN_DIR, or /run/vserver/vms as root, else under $XDG_RUNTIME_DIR)' },
    },
    async run(args) {
      const config = loadConfigOrReport(args);
      if (typeof config === 'number') return config;
      const manager = new VmManager(args.values['run-dir'] === undefined ? undefined : path.resolve(String(args.values['run-dir'])));
      let client;
      try {
        client = await manager.launch(config, { tiedTo: process.pid });
      } catch (e) {
        return reportRefusal(e, args);
      }
      const say = (status: VmStatus): void => {
        if (args.json) console.log(JSON.stringify(status));
        else process.stderr.write(`\r\n[vsctl] ${describe(status)}\r\n`);
      };
      // The worker closes the connection once the VM has stopped and it has said so.
      let last: VmStatus | null = null;
      client.on('state', (status) => { last = status; say(status); });
      const settled = new Promise<VmStatus | null>((resolve) => client.on('close', () => void manager.reap(config.id, WORKER_EXIT_MS).then((status) => resolve(status ?? last), () => resolve(last))));
      const turnOff = (): void => void client.request('turnOff').catch(() => {});
      for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, turnOff);
      const detach = args.json ? () => {} : attachTerminal(VmPaths.of(config.id, manager.root).console, turnOff);
      try {
        await client.request('turnOn');
      } catch (e) {
        detach();
        client.close();
        return reportRefusal(e, args);
      }
      const final = await settled;
      detach();
      return !final || final.crashed || isActive(final.state) ? 1 : 0;
    },
  },
  {
    name: 'check',
    usage: 'check CONFIG',
    summary: 'Validate a VM configuration against the machine profile; show the complete document, the engine and QEMU\'s command line.',
    positionals: { min: 1, max: 1 },
    options: {},
    async run(args) {
      const config = loadConfigOrReport(args);
      if (typeof config === 'number') return config;
      const engine = await chooseEngine(config.engine).catch((e: Error) => ({ engine: 'tcg' as const, reason: `refused: ${e.message}` }));
      const paths = VmPaths.of(config.id);
      const disks = new Map(hardDisks(config).map(({ slot }) => [slot, { kind: 'nbd' as const, socket: paths.disk(slot), export: slot }]));
      const command = ['qemu-system-x86_64', ...qemuArgs({
        config, engine: engine.engine, qmpSocket: paths.qmp, vncSocket: paths.vnc, taps: config.networkAdapters.map((_, i) => tapName(config.id, i)),
        disks, incoming: false, runAs: process.getuid?.() === 0 ? QEMU_USER : null,
      })];
      if (args.json) {
        console.log(JSON.stringify({ config, engine, command }, null, 2));
      } else {
        console.log(JSON.stringify(config, null, 2));
        console.log(`\nengine: ${engine.engine} (${engine.reason})`);
        console.log(`\n${command.map((a) => (/[\s"'{}]/.test(a) ? `'${a}'` : a)).join(' ')}`);
      }
      return 0;
    },
  },
];
