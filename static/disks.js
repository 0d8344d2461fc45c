// Create Virtual Disk: only the parts of the form the chosen type uses are shown (size for
// dynamic and fixed disks, the parent for a differencing one). Without scripts every part
// shows, and the server ignores the parts the type does not use.

const form = document.getElementById('disk-create');

function showParts() {
  const type = form.querySelector('input[name="type"]:checked')?.value;
  for (const part of form.querySelectorAll('[data-disk-types]')) {
    part.hidden = Boolean(type) && !part.dataset.diskTypes.split(' ').includes(type);
  }
}

if (form) {
  form.addEventListener('change', (event) => {
    if (event.target.name === 'type') showParts();
  });
  showParts();
}
