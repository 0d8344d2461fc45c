// The graphical console: noVNC's RFB client on the console WebSocket, which vserverd joins to
// the VM's QEMU VNC socket. The screen and its panel get data-connected while the RFB session is up.

import RFB from '/assets/novnc/core/rfb.js';

export class GraphicalConsole {
  /**
   * @param {object} parts screen, status, ctrlAltDel, scale, fullscreen (buttons), frame (what
   *   goes full screen), and socketFor(kind), which resolves to a WebSocket opened with a ticket.
   */
  constructor({ screen, status, ctrlAltDel, scale, fullscreen, frame, socketFor }) {
    Object.assign(this, { element: screen, status, ctrlAltDel, scale, fullscreen, frame, socketFor });
    this.rfb = null;
    this.scaled = scale.getAttribute('aria-pressed') === 'true';
    ctrlAltDel.addEventListener('click', () => this.rfb?.sendCtrlAltDel());
    scale.addEventListener('click', () => this.setScaled(!this.scaled));
    fullscreen.addEventListener('click', () => this.toggleFullscreen());
    document.addEventListener('fullscreenchange', () => fullscreen.setAttribute('aria-pressed', String(document.fullscreenElement === frame)));
    // noVNC's canvas cannot be reached by Tab: the screen can, and hands its focus on.
    screen.addEventListener('focus', () => this.rfb?.focus());
  }

  async connect() {
    if (this.rfb) return;
    this.say('Connecting…');
    // Held from here on, so that a second connect() waits for this one instead of starting another.
    this.rfb = 'pending';
    let socket;
    try {
      socket = await this.socketFor('vnc');
    } catch (error) {
      this.rfb = null;
      this.say(`Cannot connect: ${error.message}`, 'error');
      return;
    }
    let closed = null;
    // Registered before noVNC's own handler, so the server's reason is known when noVNC reports.
    socket.addEventListener('close', (event) => { closed = event; });
    const rfb = new RFB(this.element, socket);
    rfb.scaleViewport = this.scaled;
    rfb.background = '#111';
    // After a reconnect the old session's last events are no longer this console's.
    rfb.addEventListener('connect', () => {
      if (this.rfb !== rfb) return;
      this.setConnected(true);
      this.ctrlAltDel.disabled = false;
      this.say('Connected');
    });
    rfb.addEventListener('disconnect', () => {
      if (this.rfb !== rfb) return;
      this.rfb = null;
      this.setConnected(false);
      this.ctrlAltDel.disabled = true;
      this.say(closed?.reason ? `Disconnected: ${closed.reason}` : 'Disconnected', closed?.code === 1000 ? 'info' : 'error');
    });
    this.rfb = rfb;
  }

  disconnect() {
    if (this.rfb && this.rfb !== 'pending') this.rfb.disconnect();
  }

  async reconnect() {
    if (this.rfb === 'pending') return;
    this.disconnect();
    this.rfb = null;
    await this.connect();
  }

  /** Gives the keyboard back to the page. */
  release() {
    if (this.rfb && this.rfb !== 'pending') this.rfb.blur();
    this.scale.focus();
  }

  setConnected(on) {
    for (const element of [this.element, this.frame]) element.toggleAttribute('data-connected', on);
  }

  setScaled(on) {
    this.scaled = on;
    this.scale.setAttribute('aria-pressed', String(on));
    if (this.rfb && this.rfb !== 'pending') this.rfb.scaleViewport = on;
  }

  toggleFullscreen() {
    if (document.fullscreenElement) return void document.exitFullscreen();
    this.frame.requestFullscreen().catch((error) => this.say(`Full screen is not available: ${error.message}`, 'error'));
  }

  say(text, kind = 'info') {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
  }
}
