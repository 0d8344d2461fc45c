// The serial console (COM1): xterm.js on the console WebSocket, which vserverd joins to the VM
// worker's terminal. The server sends the scrollback and then live output as binary messages;
// keystrokes go back as binary messages, and the terminal's size as a JSON text message
// (docs/consoles.md). The terminal and its panel get data-connected while the socket is open.

import { Terminal } from '/assets/xterm/lib/xterm.mjs';
import { FitAddon } from '/assets/xterm-addon-fit/lib/addon-fit.mjs';
import { ConsoleConnection } from '/static/console-connection.js';

const encoder = new TextEncoder();

export class SerialConsole extends ConsoleConnection {
  /** @param {object} parts element, panel (around it), status, first (the button the keyboard goes back to), socketFor(kind) */
  constructor({ element, panel, status, first, socketFor }) {
    super({ kind: 'serial', element, panel, status, socketFor });
    this.first = first;
    this.terminal = new Terminal({ cursorBlink: true, scrollback: 5000, fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace', fontSize: 14 });
    this.fit = new FitAddon();
    this.terminal.loadAddon(this.fit);
    this.terminal.open(element);
    // Attaching replays the scrollback, and with it the guest's old terminal queries (a shell asks
    // where the cursor is at each prompt). Until the user types, they go unanswered, as they did
    // while nobody watched, so that no stale answer is typed into the guest.
    this.answering = false;
    for (const query of [{ final: 'n' }, { prefix: '?', final: 'n' }, { final: 'c' }, { prefix: '>', final: 'c' }]) {
      this.terminal.parser.registerCsiHandler(query, () => !this.answering);
    }
    this.terminal.onData((text) => {
      this.answering = true;
      this.send(encoder.encode(text));
    });
    this.terminal.onResize(({ cols, rows }) => this.send(JSON.stringify({ type: 'resize', cols, rows })));
    // The terminal follows its box (the window, full screen, a phone turned round).
    new ResizeObserver(() => this.fit.fit()).observe(element);
    this.fit.fit();
  }

  /** The session is the socket itself. */
  open(socket) {
    socket.binaryType = 'arraybuffer';
    socket.addEventListener('open', () => {
      if (!this.owns(socket)) return;
      // The server begins with the whole scrollback: start from a clean screen, not a second copy.
      this.terminal.reset();
      this.answering = false;
      this.setConnected(true);
      this.say('Connected');
      this.send(JSON.stringify({ type: 'resize', cols: this.terminal.cols, rows: this.terminal.rows }));
    });
    socket.addEventListener('message', (message) => {
      if (!this.owns(socket)) return;
      if (typeof message.data !== 'string') return this.terminal.write(new Uint8Array(message.data));
      const note = JSON.parse(message.data);
      if (note.type === 'error') this.say(note.message, 'error');
    });
    socket.addEventListener('close', (event) => {
      if (this.owns(socket)) this.ended(event);
    });
    return socket;
  }

  disconnect() {
    this.live?.close(1000, 'closed by the user');
  }

  /** Gives the keyboard back to the page. */
  release() {
    this.terminal.blur();
    this.first.focus();
  }

  send(data) {
    if (this.live?.readyState === WebSocket.OPEN) this.live.send(data);
  }
}
