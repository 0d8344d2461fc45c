// Event Viewer: entries logged while the page is open arrive over the WebSocket (site.js turns
// them into "vserver:event"). When the page shows the newest events, the rows that match its
// filter are read from the server, rendered and filtered as the page itself was, and put on top.

const table = document.querySelector('table.events[data-live]');

if (table) {
  const { category, severity, object, from, to } = table.dataset;
  const matches = (event) => (!category || event.category === category) && (!severity || event.severity === severity)
    && (!object || event.object === object) && (!from || Date.parse(event.time) >= Number(from)) && (!to || Date.parse(event.time) <= Number(to));
  let newest = Number(table.dataset.newest) || 0;
  let reading = false;
  let again = false;

  // Events come in bursts (a VM turning on logs several): one read at a time, and one more after it if needed.
  async function readNewRows() {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    try {
      do {
        again = false;
        const query = new URLSearchParams(location.search);
        query.delete('before');
        query.set('after', String(newest));
        const response = await fetch(`/events/rows?${query}`, { credentials: 'same-origin', headers: { 'X-Vserver-Background': '1' } });
        if (!response.ok) return;
        const holder = document.createElement('tbody');
        holder.innerHTML = (await response.text()).trim();
        const rows = [...holder.querySelectorAll('tr[data-event]')].filter((row) => Number(row.dataset.event) > newest);
        if (rows.length === 0) continue;
        newest = Number(rows[0].dataset.event);
        table.tBodies[0].querySelector('tr.empty')?.remove();
        table.tBodies[0].prepend(...rows);
      } while (again);
    } finally {
      reading = false;
    }
  }

  document.addEventListener('vserver:event', (event) => {
    if (matches(event.detail)) void readNewRows();
  });
}
