// vsctl vm console|serial: a VM's serial output through vserverd. console attaches this terminal
// (or stdin and stdout) to COM1 over the serial console WebSocket, with a ticket given to the
// token (VirtualMachine.CreateConsoleTicket); serial prints VirtualMachine.GetSerialOutput, once
// or followed. docs/cli.md describes both.

import WebSocket, { type RawData } from 'ws';
import { CLOSE_VM_STOPPED } from '../../server/http/console-tickets.js';
import type { SerialOutput } from '../../vmm/serial-output.js';
import { ApiCallError, type ApiClient } from './api-client.js';
import { clientFor, CONNECTION_OPTIONS, printJson } from './api-call.js';
import { parseCount } from './api-output.js';
import { resolveVm } from './api-vm.js';
import type { Command } from './command.js';
import { UsageError } from './terminal.js';

/** Ctrl+]: leaves the console, as in telnet, virsh console and the website's console. */
const ESCAPE = 0x1d;
/** Once piped input has ended, the console is left when the guest has been quiet this long. */
const QUIET_AFTER_INPUT_MS = 1_000;
/** How often --follow asks for new output. */
const FOLLOW_MS = 500;
/** The errors that end --follow quietly: the VM is no longer there to read. */
const STOPPED = ['VM_E_VM_NOT_RUNNING', 'VM_E_WORKER_GONE'];
/**
 * Terminal queries (cursor position, device attributes). The scrollback replays the guest's old
 * ones; until the user types, they are not passed to the local terminal, whose answers would
 * otherwise be typed into the guest (the website's console does the same).
 */
// eslint-disable-next-line no-control-regex -- the escape character is what the pattern is about
const TERMINAL_QUERIES = /\x1b\[[?>]?\d*[nc]/g;

interface Message { data: RawData; isBinary: boolean }

/**
 * Opens the serial console WebSocket with a new ticket; refusals become ApiCallErrors with
 * vserverd's reason. The scrollback may come with the upgrade's answer, before the caller
 * listens: the messages received so far are kept in `early`.
 */
async function openSerialConsole(client: ApiClient, vm: string): Promise<{ ws: WebSocket; early: Message[] }> {
  const { url } = await client.call<{ url: string }>('VirtualMachine.CreateConsoleTicket', { this: vm, kind: 'serial' });
  const headers = client.connection.token ? { authorization: `Bearer ${client.connection.token}` } : undefined;
  const ws = new WebSocket(`${client.url.replace(/^http/, 'ws')}${url}`, { headers });
  const early: Message[] = [];
  ws.on('message', (data: RawData, isBinary: boolean) => { early.push({ data, isBinary }); });
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      ws.removeAllListeners('error');
      resolve({ ws, early });
    });
    ws.once('unexpected-response', (_request, response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (s: string) => { body += s; });
      response.on('end', () => reject(new ApiCallError('VSCTL_E_CONSOLE_REFUSED', `vserverd refused the serial console (HTTP ${response.statusCode}): ${body.trim() || 'no reason given'}`, { status: response.statusCode })));
    });
    ws.once('error', (error) => reject(client.unreachable({ cause: error })));
  });
}

/** COM1 on this terminal (raw) or on stdin and stdout; resolves with the exit status once the console has ended. */
function attach({ ws, early }: { ws: WebSocket; early: Message[] }, name: string): Promise<number> {
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  let filterQueries = raw && process.stdout.isTTY === true;
  let leaving = false;
  let inputEnded = false;
  let quiet: NodeJS.Timeout | null = null;
  const say = (text: string): void => { process.stderr.write(`${raw ? '\r\n' : ''}[vsctl] ${text}${raw ? '\r' : ''}\n`); };

  const leave = (): void => {
    leaving = true;
    ws.close(1000, 'left with Ctrl+]');
  };
  const onInput = (data: Buffer): void => {
    filterQueries = false;
    const at = data.indexOf(ESCAPE);
    const typed = at >= 0 ? data.subarray(0, at) : data;
    if (typed.length && ws.readyState === ws.OPEN) ws.send(typed, { binary: true });
    if (at >= 0) leave();
  };
  const onInputEnd = (): void => {
    inputEnded = true;
    quiet = setTimeout(leave, QUIET_AFTER_INPUT_MS);
  };
  const restore = (): void => {
    stdin.off('data', onInput);
    stdin.off('end', onInputEnd);
    if (raw) stdin.setRawMode(false);
    stdin.pause();
    if (quiet) clearTimeout(quiet);
  };
  const onSignal = (): void => {
    restore();
    process.exit(130);
  };

  const show = (data: RawData, isBinary: boolean): void => {
    if (!isBinary) {
      const note = JSON.parse(String(data)) as { type?: string; message?: string };
      if (note.type === 'error') say(`vserverd: ${note.message ?? ''}`);
      return;
    }
    const bytes = data as Buffer;
    process.stdout.write(filterQueries ? bytes.toString('latin1').replace(TERMINAL_QUERIES, '') : bytes, filterQueries ? 'latin1' : undefined);
    if (inputEnded) {
      if (quiet) clearTimeout(quiet);
      quiet = setTimeout(leave, QUIET_AFTER_INPUT_MS);
    }
  };

  return new Promise((resolve) => {
    // From here on, messages are shown as they come; those that came first, before them.
    ws.removeAllListeners('message');
    for (const { data, isBinary } of early) show(data, isBinary);
    ws.on('message', show);
    ws.on('error', () => ws.terminate());
    ws.on('close', (code, reason) => {
      restore();
      for (const signal of ['SIGTERM', 'SIGHUP'] as const) process.off(signal, onSignal);
      if (leaving) {
        say(`left the serial console of ${name}`);
        resolve(0);
      } else if (code === CLOSE_VM_STOPPED) {
        say(`the VM stopped (${reason.toString() || name})`);
        resolve(0);
      } else {
        say(`the serial console closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`);
        resolve(1);
      }
    });
    for (const signal of ['SIGTERM', 'SIGHUP'] as const) process.once(signal, onSignal);
    if (raw) stdin.setRawMode(true);
    stdin.on('data', onInput);
    stdin.on('end', onInputEnd);
    stdin.resume();
    say(`connected to the serial console (COM1) of ${name}; Ctrl+] leaves`);
  });
}

export const consoleCommands: Command[] = [
  {
    name: 'console',
    usage: 'console NAME|ID',
    summary: 'Attach this terminal to the VM\'s serial console (COM1): its scrollback, then live output; what you type goes to the guest. Ctrl+] leaves.',
    details: [
      'The terminal is put in raw mode (Ctrl-C goes to the guest) and restored when the console ends. Ctrl+] leaves;',
      'the exit status is 0 when you left or the VM stopped, 1 when the console ended otherwise. With stdin not a',
      'terminal, its bytes are typed as they come, and once it ends vsctl leaves when the guest has been quiet for',
      `${QUIET_AFTER_INPUT_MS / 1000} s. Needs the control right on the VM. Messages from vsctl go to stderr, the guest's output to stdout.`,
    ].join('\n'),
    positionals: { min: 1, max: 1 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const [text] = args.positionals;
      const vm = await resolveVm(client, text);
      return attach(await openSerialConsole(client, vm), text);
    },
  },
  {
    name: 'serial',
    usage: 'serial NAME|ID [--port 1|2] [--since N] [--follow]',
    summary: 'Print what a serial port of the running VM wrote (VirtualMachine.GetSerialOutput): COM1\'s scrollback, or from position N.',
    details: [
      'Positions are byte offsets since the VM was turned on; --json prints {text, next, skipped}, and --since NEXT',
      'goes on from there. Output older than the scrollback is lost: vsctl says how many bytes on stderr. --follow',
      `asks again every ${FOLLOW_MS} ms and prints what is new (with --json, one object per line) until the VM stops.`,
    ].join('\n'),
    positionals: { min: 1, max: 1 },
    options: {
      port: { type: 'string', valueName: '1|2', description: 'COM1 (the serial console, the default) or COM2 (when connected to a file)' },
      since: { type: 'string', valueName: 'N', description: 'the position to read from ("next" of an earlier answer); everything kept when omitted' },
      follow: { type: 'boolean', short: 'f', description: 'keep printing new output until the VM stops' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const port = args.values.port === undefined ? 1 : parseCount(args.values.port, '--port', 1);
      if (port > 2) throw new UsageError('--port: 1 (COM1) or 2 (COM2)');
      let since = args.values.since === undefined ? undefined : parseCount(args.values.since, '--since');
      const client = clientFor(args.values);
      const vm = await resolveVm(client, args.positionals[0]);
      for (;;) {
        let output: SerialOutput;
        try {
          output = await client.call<SerialOutput>('VirtualMachine.GetSerialOutput', { this: vm, port, ...(since === undefined ? {} : { since }) });
        } catch (e) {
          // Followed to its end: the VM stopped (or its worker went while vserverd asked it).
          if (!args.values.follow || since === undefined || !(e instanceof ApiCallError) || !STOPPED.includes(e.name)) throw e;
          process.stderr.write(`[vsctl] the VM stopped (${e.message})\n`);
          return 0;
        }
        if (output.skipped) process.stderr.write(`[vsctl] ${output.skipped} bytes of older output were lost: they were no longer kept\n`);
        if (args.json) {
          if (!args.values.follow) printJson(output);
          else if (output.text || output.skipped) console.log(JSON.stringify(output));
        } else {
          process.stdout.write(output.text);
        }
        if (!args.values.follow) return 0;
        since = output.next;
        await new Promise((r) => setTimeout(r, FOLLOW_MS));
      }
    },
  },
];
