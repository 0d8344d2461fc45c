// The graphical console: noVNC's RFB client on the console WebSocket, which vserverd joins to
// the VM's QEMU VNC socket. The screen and its panel get data-connected while the RFB session is up.

import RFB from '/assets/novnc/core/rfb.js';
import { ConsoleConnection } from '/static/console-connection.js';

export class GraphicalConsole extends ConsoleConnection {
  /**
   * @param {object} parts screen, status, ctrlAltDel, scale, fullscreen (buttons), frame (what
   *   goes full screen), and socketFor(kind), which resolves to a WebSocket opened with a ticket.
   */
  constructor({ screen, status, ctrlAltDel, scale, fullscreen, frame, socketFor }) {
    super({ kind: 'vnc', element: screen, panel: frame, status, socketFor });
    Object.assign(this, { ctrlAltDel, scale, fullscreen, frame });
    this.scaled = scale.getAttribute('aria-pressed') === 'true';
    ctrlAltDel.addEventListener('click', () => this.live?.sendCtrlAltDel());
    scale.addEventListener('click', () => this.setScaled(!this.scaled));
    fullscreen.addEventListener('click', () => this.toggleFullscreen());
    document.addEventListener('fullscreenchange', () => fullscreen.setAttribute('aria-pressed', String(document.fullscreenElement === frame)));
    // noVNC's canvas cannot be reached by Tab: the screen can, and hands its focus on.
    screen.addEventListener('focus', () => this.live?.focus());
  }

  /** The session is noVNC's RFB client on the socket. */
  open(socket) {
    let closed = null;
    // Registered before noVNC's own handler, so the server's reason is known when noVNC reports.
    socket.addEventListener('close', (event) => { closed = event; });
    const rfb = new RFB(this.element, socket);
    rfb.scaleViewport = this.scaled;
    rfb.background = '#111';
    rfb.addEventListener('connect', () => {
      if (!this.owns(rfb)) return;
      this.setConnected(true);
      this.say('Connected');
    });
    rfb.addEventListener('disconnect', () => {
      if (this.owns(rfb)) this.ended(closed);
    });
    return rfb;
  }

  disconnect() {
    this.live?.disconnect();
  }

  /** Gives the keyboard back to the page. */
  release() {
    this.live?.blur();
    this.scale.focus();
  }

  /** Ctrl+Alt+Del is there while connected. */
  setConnected(on) {
    super.setConnected(on);
    this.ctrlAltDel.disabled = !on;
  }

  setScaled(on) {
    this.scaled = on;
    this.scale.setAttribute('aria-pressed', String(on));
    if (this.live) this.live.scaleViewport = on;
  }

  toggleFullscreen() {
    if (document.fullscreenElement) return void document.exitFullscreen();
    this.frame.requestFullscreen().catch((error) => this.say(`Full screen is not available: ${error.message}`, 'error'));
  }
}
