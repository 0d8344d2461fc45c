// What the page's two consoles (console-vnc.js, console-serial.js) share: one session at a time
// on a WebSocket opened with a ticket (socketFor), Reconnect, the data-connected marks and the
// status line. Each console opens its own session on the socket (open) and says when it ends.

export class ConsoleConnection {
  /**
   * @param {object} parts kind ('vnc' or 'serial'), element (what takes the keyboard), panel (marked
   *   data-connected with it), status (the status line), and socketFor(kind), which resolves to a
   *   WebSocket opened with a ticket.
   */
  constructor({ kind, element, panel, status, socketFor }) {
    Object.assign(this, { kind, element, panel, status, socketFor });
    // Null, 'pending' while the ticket and socket are being asked for, then the session.
    this.session = null;
  }

  /** The session while it is open, else null. */
  get live() {
    return this.session && this.session !== 'pending' ? this.session : null;
  }

  async connect() {
    if (this.session) return;
    this.say('Connecting…');
    // Held from here on, so that a second connect() waits for this one instead of starting another.
    this.session = 'pending';
    let socket;
    try {
      socket = await this.socketFor(this.kind);
    } catch (error) {
      this.session = null;
      this.say(`Cannot connect: ${error.message}`, 'error');
      return;
    }
    this.session = this.open(socket);
  }

  async reconnect() {
    if (this.session === 'pending') return;
    this.disconnect();
    this.session = null;
    await this.connect();
  }

  /** Whether `session` is still this console's: after a reconnect the old session's last events are not. */
  owns(session) {
    return this.session === session;
  }

  /** The session has ended; `closed` is its socket's close event, when known. */
  ended(closed) {
    this.session = null;
    this.setConnected(false);
    this.say(closed?.reason ? `Disconnected: ${closed.reason}` : 'Disconnected', closed?.code === 1000 ? 'info' : 'error');
  }

  setConnected(on) {
    for (const element of [this.element, this.panel]) element.toggleAttribute('data-connected', on);
  }

  say(text, kind = 'info') {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
  }
}
