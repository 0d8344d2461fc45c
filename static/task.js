// A task's page, live: its bar and status follow the API's Task.OnProgress events (which
// site.js turns into "vserver:task"); when it finishes the page reads the task once more for its
// log and the link to what it made, and marks itself data-complete.
// The task may have moved on before the WebSocket connected, so the page also re-reads it
// every few seconds until it is complete.

const page = document.getElementById('task');

function show(task) {
  const progress = document.getElementById('task-progress');
  progress.value = task.percent;
  progress.textContent = `${task.percent}%`;
  const status = document.getElementById('task-status');
  status.textContent = task.status;
  status.classList.toggle('error', Boolean(task.error));
}

function showFinished(task) {
  show(task);
  const log = document.getElementById('task-log');
  log.replaceChildren(...task.log.map((line) => Object.assign(document.createElement('li'), { textContent: line })));
  const outcome = document.getElementById('task-outcome');
  if (outcome && task.outcome) {
    outcome.textContent = task.outcome;
    outcome.hidden = false;
  }
  const result = document.getElementById('task-result');
  if (task.result) {
    const link = Object.assign(document.createElement('a'), { href: task.result.href, textContent: task.result.label, className: 'button' });
    result.replaceChildren(link);
    result.hidden = false;
  }
  document.getElementById('task-cancel')?.remove();
  page.dataset.complete = 'true';
}

async function reread() {
  const response = await fetch(`/tasks/${encodeURIComponent(page.dataset.task)}`, { headers: { Accept: 'application/json', 'X-Vserver-Background': '1' }, credentials: 'same-origin' });
  if (!response.ok) return;
  const task = await response.json();
  if (task.complete) showFinished(task);
  else show(task);
}

if (page && page.dataset.complete !== 'true') {
  document.addEventListener('vserver:task', (event) => {
    const note = event.detail;
    if (note.task !== `Task/${page.dataset.task}` || page.dataset.complete === 'true') return;
    if (note.isComplete) {
      void reread();
      return;
    }
    show({ percent: note.percentCompleted, status: `running ${note.percentCompleted}%`, error: null });
  });
  const timer = setInterval(() => {
    if (page.dataset.complete === 'true') clearInterval(timer);
    else if (!document.hidden) void reread().catch(() => {});
  }, 3000);
}
