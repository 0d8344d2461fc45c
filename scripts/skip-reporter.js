// A node:test reporter that writes one JSON line per skipped (or todo) test: its file, name and
// reason. run-tests.js reads them to hold every skip to test/allowed-skips.json.

export default async function* skipReporter(source) {
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { skip, todo, name, file } = event.data;
    if (skip !== undefined && skip !== false) yield `${JSON.stringify({ file, name, kind: 'skip', reason: skip === true ? '' : String(skip) })}\n`;
    else if (todo !== undefined && todo !== false) yield `${JSON.stringify({ file, name, kind: 'todo', reason: todo === true ? '' : String(todo) })}\n`;
  }
}
