// The serial console (COM1): xterm.js on the console WebSocket, which vserverd joins to the VM
// worker's terminal. The server sends the scrollback and then live output as binary messages;
// keystrokes go back as binary messages, and the terminal's size as a JSON text message
// (docs/consoles.md). The terminal and its panel get data-connected while the socket is open.

import { Terminal } from '/assets/xterm/lib/xterm.mjs';
import { FitAddon } from '/assets/xterm-addon-fit/lib/addon-fit.mjs';

const encoder = new TextEncoder();

export class SerialConsole {
  /** @param {object} parts element, panel (around it), status, first (the button the keyboard goes back to), socketFor(kind) */
  constructor({ element, panel, status, first, socketFor }) {
    Object.assign(this, { element, panel, status, first, socketFor });
    this.socket = null;
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

  async connect() {
    if (this.socket) return;
    this.say('Connecting…');
    this.socket = 'pending';
    let socket;
    try {
      socket = await this.socketFor('serial');
    } catch (error) {
      this.socket = null;
      this.say(`Cannot connect: ${error.message}`, 'error');
      return;
    }
    socket.binaryType = 'arraybuffer';
    // After a reconnect the old socket's last events are no longer this console's.
    socket.addEventListener('open', () => {
      if (this.socket !== socket) return;
      // The server begins with the whole scrollback: start from a clean screen, not a second copy.
      this.terminal.reset();
      this.answering = false;
      this.setConnected(true);
      this.say('Connected');
      this.send(JSON.stringify({ type: 'resize', cols: this.terminal.cols, rows: this.terminal.rows }));
    });
    socket.addEventListener('message', (message) => {
      if (this.socket !== socket) return;
      if (typeof message.data !== 'string') return this.terminal.write(new Uint8Array(message.data));
      const note = JSON.parse(message.data);
      if (note.type === 'error') this.say(note.message, 'error');
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.setConnected(false);
      this.say(event.reason ? `Disconnected: ${event.reason}` : 'Disconnected', event.code === 1000 ? 'info' : 'error');
    });
    this.socket = socket;
  }

  disconnect() {
    if (this.socket && this.socket !== 'pending') this.socket.close(1000, 'closed by the user');
  }

  async reconnect() {
    if (this.socket === 'pending') return;
    this.disconnect();
    this.socket = null;
    await this.connect();
  }

  /** Gives the keyboard back to the page. */
  release() {
    this.terminal.blur();
    this.first.focus();
  }

  setConnected(on) {
    for (const element of [this.element, this.panel]) element.toggleAttribute('data-connected', on);
  }

  send(data) {
    if (this.socket && this.socket !== 'pending' && this.socket.readyState === WebSocket.OPEN) this.socket.send(data);
  }

  say(text, kind = 'info') {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
  }
}
