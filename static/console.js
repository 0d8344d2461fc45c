// Remote Control: the page's two consoles (console-vnc.js, console-serial.js). Each connection
// starts with a one-time ticket from POST /vms/ID/console/ticket (the session's CSRF token
// goes with it); the WebSocket then presents the ticket. The consoles connect while the VM runs,
// and again when it is turned on. Ctrl+] gives the keyboard back to the page, since Tab and
// Escape belong to the VM.

import { GraphicalConsole } from '/static/console-vnc.js';
import { SerialConsole } from '/static/console-serial.js';

const LIVE_STATES = ['Running', 'Paused'];
const page = document.getElementById('consoles');
const vmId = page.dataset.vm;
const csrf = document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') ?? '';
const byId = (id) => document.getElementById(id);

/** Asks for a ticket for one console and opens its WebSocket with it. */
async function socketFor(kind) {
  const response = await fetch(`/vms/${encodeURIComponent(vmId)}/console/ticket`, {
    method: 'POST', body: new URLSearchParams({ _csrf: csrf, kind }), headers: { Accept: 'application/json' }, credentials: 'same-origin',
  });
  if (response.redirected && new URL(response.url).pathname === '/login') location.assign('/login');
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error?.message ?? `${response.status} ${response.statusText}`);
  return new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${answer.url}`);
}

const graphical = new GraphicalConsole({
  screen: byId('vnc-screen'), status: byId('vnc-status'), ctrlAltDel: byId('vnc-ctrl-alt-del'), scale: byId('vnc-scale'),
  fullscreen: byId('vnc-fullscreen'), frame: byId('vnc-console'), socketFor,
});
const serial = new SerialConsole({ element: byId('serial-terminal'), panel: byId('serial-console'), status: byId('serial-status'), first: byId('serial-reconnect'), socketFor });
const consoles = [graphical, serial];
byId('vnc-reconnect').addEventListener('click', () => void graphical.reconnect());
byId('serial-reconnect').addEventListener('click', () => void serial.reconnect());

// In the capture phase, before noVNC or xterm.js take the key for the VM.
document.addEventListener('keydown', (event) => {
  if (!event.ctrlKey || event.code !== 'BracketRight') return;
  const focused = consoles.find((c) => c.element.contains(document.activeElement));
  if (!focused) return;
  event.preventDefault();
  event.stopPropagation();
  focused.release();
}, true);

function showState(state) {
  page.dataset.state = state;
  const shown = byId('vm-state');
  shown.textContent = state;
  shown.className = `state-${state}`;
  if (LIVE_STATES.includes(state)) {
    for (const c of consoles) void c.connect();
  } else {
    for (const c of consoles) if (!c.element.hasAttribute('data-connected')) c.say(`${page.dataset.vmName} is ${state}`);
  }
}

document.addEventListener('vserver:state', (event) => {
  if (event.detail.id === vmId) showState(event.detail.state);
});
showState(page.dataset.state);
