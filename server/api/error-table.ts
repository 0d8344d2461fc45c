// docs/errors.md: the error catalogue as a table. `node dist/server/api/error-table.js > docs/errors.md`
// writes it; test/error-catalogue.test.ts checks that it is current.

import { fileURLToPath } from 'node:url';
import { ERRORS } from '../error-catalogue.js';

/** The table of every error name: its JSON-RPC code, its HTTP status and its meaning. */
export function errorTable(): string[] {
  return [
    '| name | JSON-RPC code | HTTP status | meaning |',
    '|---|---|---|---|',
    ...Object.entries(ERRORS).map(([name, e]) => `| \`${name}\` | ${e.rpc} | ${e.http} | ${e.doc} |`),
  ];
}

export function errorReference(): string {
  return [
    '# vserverd\'s error names',
    '',
    '<!-- Generated from server/error-catalogue.ts by `node dist/server/api/error-table.js > docs/errors.md`; do not edit by hand. -->',
    '',
    'Every name vserverd can give a caller, in JSON-RPC\'s `error.data.name` (and in `error.name` of `POST /api/login`).',
    'The HTTP status is that of an answer that is the error alone: the refusals before a call (no caller, a missing',
    'CSRF token, a body too large or unreadable), `POST /api/login` and the website\'s refusal pages. An answer to',
    '`POST /api/rpc` is HTTP 200 whatever errors it carries. `docs/api-guide.md` shows an error answer.',
    '',
    ...errorTable(),
    '',
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(errorReference());
