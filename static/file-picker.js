// The file picker: every path field (input[data-file-picker="vhd|iso|vmc|vnc|vfd|folder|any"]) gets
// a "Browse…" button that opens a dialog listing one folder inside the storage roots, as
// GET /files gives it. Folders open, ".." goes up (never above a root), a file fills the field;
// a folder field has "Use this folder", and a new file's field (data-file-picker-new) takes a
// file name for the folder shown. Escape or Cancel closes it; focus goes back to the field.
// Without scripts, or without <dialog>, the field is typed as it is.

const TITLES = {
  vhd: 'Choose a virtual hard disk (.vhd)',
  iso: 'Choose a CD/DVD image (.iso)',
  vmc: 'Choose a virtual machine configuration (.vmc)',
  vnc: 'Choose a virtual network configuration (.vnc)',
  vfd: 'Choose a floppy disk image (.vfd, .flp)',
  folder: 'Choose a folder',
  any: 'Choose a file',
};

/** The field being chosen for, and where the dialog is. */
let session = null;
let dialog = null;
const part = (name) => dialog.querySelector(`[data-part="${name}"]`);

function sizeText(bytes) {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? Number(value.toFixed(1)) : value} ${units[unit]}`;
}

function folderOf(value) {
  const slash = value.lastIndexOf('/');
  return slash > 0 ? value.slice(0, slash) : slash === 0 ? '/' : '';
}

function joinPath(folder, name) {
  return `${folder.replace(/\/+$/, '')}/${name}`;
}

function buildDialog() {
  dialog = document.createElement('dialog');
  dialog.className = 'file-picker-dialog';
  dialog.setAttribute('aria-labelledby', 'file-picker-title');
  dialog.innerHTML = `
    <h2 id="file-picker-title" data-part="title"></h2>
    <div class="field" data-part="roots" hidden>
      <label for="file-picker-root">Storage root</label>
      <select id="file-picker-root" data-part="root"></select>
    </div>
    <p class="file-picker-folder" aria-live="polite">Folder: <code data-part="folder"></code></p>
    <p class="error" role="alert" data-part="error" hidden></p>
    <ul class="file-picker-entries" data-part="entries" aria-label="Contents of the folder"></ul>
    <div class="field" data-part="name-field" hidden>
      <label for="file-picker-name">File name</label>
      <input id="file-picker-name" data-part="name" autocomplete="off" spellcheck="false">
    </div>
    <div class="file-picker-actions">
      <button type="button" class="primary" data-part="use" hidden></button>
      <button type="button" data-part="cancel">Cancel</button>
    </div>`;
  document.body.append(dialog);
  part('cancel').addEventListener('click', closePicker);
  // Escape: closed here rather than by the browser, so that focus goes to the field at once.
  dialog.addEventListener('cancel', (event) => {
    event.preventDefault();
    closePicker();
  });
  part('use').addEventListener('click', useFolder);
  part('name').addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      event.preventDefault();
      useFolder();
    }
  });
  part('root').addEventListener('change', (event) => void show(event.target.value));
  part('entries').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-path]');
    if (!button) return;
    if (button.dataset.type === 'folder') void show(button.dataset.path, true);
    else if (session.newFile) part('name').value = button.dataset.name;
    else choose(button.dataset.path);
  });
}

/** Closes the dialog; focus goes back to the field it was opened for. */
function closePicker() {
  const input = session?.input;
  session = null;
  dialog.close();
  input?.focus();
}

function showError(message) {
  const error = part('error');
  error.textContent = message ?? '';
  error.hidden = !message;
}

function entryButton(path, type, label, detail, name) {
  const item = document.createElement('li');
  const button = Object.assign(document.createElement('button'), { type: 'button', className: `file-picker-${type}` });
  button.dataset.path = path;
  button.dataset.type = type;
  if (name) button.dataset.name = name;
  button.append(Object.assign(document.createElement('span'), { textContent: label, className: 'file-picker-label' }));
  if (detail) button.append(Object.assign(document.createElement('span'), { textContent: detail, className: 'muted' }));
  item.append(button);
  return item;
}

function render(listing) {
  session.folder = listing.folder;
  part('folder').textContent = listing.folder;
  const roots = part('root');
  roots.replaceChildren(...listing.roots.map((root) => Object.assign(document.createElement('option'), { value: root, textContent: root, selected: root === listing.root })));
  part('roots').hidden = listing.roots.length < 2;
  const items = [];
  if (listing.parent) items.push(entryButton(listing.parent, 'folder', '.. (up one folder)', '', ''));
  for (const entry of listing.entries) {
    items.push(entry.type === 'folder'
      ? entryButton(entry.path, 'folder', `${entry.name}/`, 'folder', '')
      : entryButton(entry.path, 'file', entry.name, sizeText(entry.size), entry.name));
  }
  if (items.length === 0) items.push(Object.assign(document.createElement('li'), { textContent: 'Nothing to choose here.', className: 'muted' }));
  part('entries').replaceChildren(...items);
}

/** Lists `folder` (the first root when empty); a refusal is shown and the listing kept. */
async function show(folder, focusList = false) {
  const query = new URLSearchParams({ kind: session.kind });
  if (folder) query.set('path', folder);
  const response = await fetch(`/files?${query}`, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
  const answer = await response.json().catch(() => ({}));
  if (!session) return false;
  if (!response.ok) {
    showError(answer.error?.message ?? `${response.status} ${response.statusText}`);
    return false;
  }
  showError('');
  render(answer);
  if (focusList) part('entries').querySelector('button')?.focus();
  return true;
}

function choose(value) {
  const input = session.input;
  input.value = value;
  input.dispatchEvent(new CustomEvent('input', { bubbles: true }));
  input.dispatchEvent(new CustomEvent('change', { bubbles: true }));
  closePicker();
}

function useFolder() {
  if (!session.newFile) return choose(session.folder);
  const name = part('name').value.trim();
  if (!name || name.includes('/')) {
    showError(name ? 'a file name cannot contain "/": open the folder instead' : 'type the new file\'s name');
    part('name').focus();
    return;
  }
  choose(joinPath(session.folder, name));
}

async function openPicker(input) {
  if (!dialog) buildDialog();
  const kind = Object.hasOwn(TITLES, input.dataset.filePicker) ? input.dataset.filePicker : 'any';
  const newFile = input.hasAttribute('data-file-picker-new');
  session = { input, kind, newFile, folder: '' };
  part('title').textContent = newFile ? 'Choose a folder for the new file' : TITLES[kind];
  part('use').textContent = newFile ? 'Use this folder and name' : 'Use this folder';
  part('use').hidden = !(newFile || kind === 'folder');
  part('name-field').hidden = !newFile;
  const value = input.value.trim();
  part('name').value = newFile ? value.slice(value.lastIndexOf('/') + 1) : '';
  part('entries').replaceChildren();
  showError('');
  dialog.showModal();
  // Start where the field points; if that cannot be listed, at the first root.
  const start = kind === 'folder' ? value : folderOf(value);
  const shown = (start && await show(start, true)) || await show('', true);
  if (!shown && session) part('cancel').focus();
}

/** Gives each path field under `root` its Browse button (once). */
export function enhanceFilePickers(root = document) {
  for (const input of root.querySelectorAll('input[data-file-picker]')) {
    if (input.dataset.filePickerReady) continue;
    input.dataset.filePickerReady = 'true';
    const label = input.labels?.[0]?.textContent.trim();
    const button = Object.assign(document.createElement('button'), { type: 'button', textContent: 'Browse…', className: 'file-picker-browse' });
    button.setAttribute('aria-haspopup', 'dialog');
    // Named in its text, not aria-label, so that finding the field by its label finds only the field.
    if (label) button.append(Object.assign(document.createElement('span'), { className: 'visually-hidden', textContent: ` for ${label}` }));
    button.addEventListener('click', () => void openPicker(input).catch((error) => {
      if (session) showError(error.message);
    }));
    input.after(button);
  }
}

if (typeof document.createElement('dialog').showModal === 'function') enhanceFilePickers();
