// The site's live parts, shared by every page: the API's WebSocket (/api/ws) brings VM state
// changes and task progress, which update Master Status rows and the task list without a
// reload; forms marked data-async are sent with fetch so the page stays put. Pages listen for
// the "vserver:state" and "vserver:task" events for anything of their own.

import './file-picker.js';

const csrf = document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') ?? '';

/** Shows a message in the page's alert area (created on first use). */
export function announce(text, kind = 'error') {
  let area = document.getElementById('flash');
  if (!area) {
    area = document.createElement('p');
    area.id = 'flash';
    area.setAttribute('role', 'alert');
    document.querySelector('main h1')?.after(area);
  }
  area.className = kind;
  area.textContent = text;
}

/** Posts a form with fetch; resolves to the JSON answer, or throws with the server's message. */
export async function postForm(form) {
  const body = new URLSearchParams(new FormData(form));
  if (!body.has('_csrf')) body.set('_csrf', csrf);
  // getAttribute: a field named "action" (the power forms have one) shadows form.action.
  const response = await fetch(form.getAttribute('action') ?? location.pathname, { method: 'POST', body, headers: { Accept: 'application/json' }, credentials: 'same-origin' });
  if (response.redirected && new URL(response.url).pathname === '/login') location.assign('/login');
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error?.message ?? `${response.status} ${response.statusText}`);
  return answer;
}

const rowReads = new Map();

async function refreshRow(id) {
  if (!document.querySelector(`tr.vm-row[data-vm="${id}"]`)) return;
  // States arrive in quick succession: only the newest read of a row may replace it.
  const read = (rowReads.get(id) ?? 0) + 1;
  rowReads.set(id, read);
  const response = await fetch(`/status/rows/${encodeURIComponent(id)}`, { credentials: 'same-origin', headers: { 'X-Vserver-Background': '1' } });
  if (!response.ok || rowReads.get(id) !== read) return;
  const holder = document.createElement('tbody');
  holder.innerHTML = (await response.text()).trim();
  const fresh = holder.firstElementChild;
  if (!fresh) return;
  // Keep the old picture until the new one has loaded, so the thumbnail does not flicker.
  const img = fresh.querySelector('img.thumbnail');
  if (img && !img.complete) await new Promise((resolve) => { img.onload = img.onerror = resolve; });
  const row = document.querySelector(`tr.vm-row[data-vm="${id}"]`);
  if (!row || rowReads.get(id) !== read) return;
  const hadFocus = row.contains(document.activeElement) ? document.activeElement.dataset.action : null;
  row.replaceWith(fresh);
  if (hadFocus) (fresh.querySelector(`[data-action="${hadFocus}"]`) ?? fresh.querySelector('.name a'))?.focus();
}

function showTask(task) {
  const list = document.getElementById('tasks');
  if (!list) return;
  const id = task.task.slice('Task/'.length);
  let item = list.querySelector(`[data-task="${id}"]`);
  if (!item) {
    item = document.createElement('li');
    item.className = 'task';
    item.dataset.task = id;
    item.innerHTML = '<span class="task-description"></span> <progress max="100"></progress> <span class="task-status"></span>';
    item.querySelector('.task-description').textContent = task.description;
    item.querySelector('progress').setAttribute('aria-label', task.description);
    list.prepend(item);
  }
  item.querySelector('progress').value = task.percentCompleted;
  item.querySelector('.task-status').textContent = task.error ? `failed: ${task.error.message}` : task.isComplete ? 'done' : `${task.percentCompleted}%`;
  item.classList.toggle('failed', Boolean(task.error));
  item.classList.toggle('done', task.isComplete && !task.error);
}

function connect(delay = 500) {
  const socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/ws`);
  socket.addEventListener('open', () => { delay = 500; });
  socket.addEventListener('message', (message) => {
    const note = JSON.parse(message.data);
    if (note.method === 'VirtualMachine.OnStateChange') {
      const id = note.params.vm.slice('VirtualMachine/'.length);
      void refreshRow(id);
      document.dispatchEvent(new CustomEvent('vserver:state', { detail: { ...note.params, id } }));
    } else if (note.method === 'Task.OnProgress') {
      showTask(note.params);
      document.dispatchEvent(new CustomEvent('vserver:task', { detail: note.params }));
    } else if (note.method === 'VirtualServer.OnEventLogged') {
      document.dispatchEvent(new CustomEvent('vserver:event', { detail: note.params }));
    }
  });
  socket.addEventListener('close', (event) => {
    // The session ended (signed out elsewhere, or idle too long): back to the sign-in page.
    if (event.code === 4401) return location.assign('/login');
    setTimeout(() => connect(Math.min(delay * 2, 10_000)), delay);
  });
}

document.addEventListener('submit', (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-async')) return;
  event.preventDefault();
  const button = form.querySelector('button[type="submit"]');
  if (button) button.disabled = true;
  postForm(form)
    .then((answer) => form.dispatchEvent(new CustomEvent('vserver:done', { detail: answer, bubbles: true })))
    .catch((error) => {
      announce(error.message);
      if (button) button.disabled = false;
    });
});

document.querySelector('.nav-toggle')?.addEventListener('click', (event) => {
  const open = document.body.classList.toggle('nav-open');
  event.currentTarget.setAttribute('aria-expanded', String(open));
});

// Running VMs' rows (uptime, CPU, thumbnail) are re-read every few seconds.
const table = document.querySelector('table.status');
if (table) {
  const seconds = Number(table.dataset.thumbnailSeconds) || 5;
  setInterval(() => {
    if (document.hidden) return;
    for (const row of document.querySelectorAll('tr.vm-row[data-live]')) void refreshRow(row.dataset.vm);
  }, seconds * 1000);
}

connect();
