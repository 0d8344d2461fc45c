// docs/cli.md is generated from the command declarations, so the manual and --help never
// disagree: "node dist/bin/cli/reference.js > docs/cli.md" rewrites it, and a test checks it.

import { fileURLToPath } from 'node:url';
import { helpText } from './command.js';
import { commandGroups } from './groups.js';

export function cliReference(): string {
  const out = [
    '# vsctl: the command line',
    '',
    '<!-- Generated from bin/cli/*.ts by `node dist/bin/cli/reference.js > docs/cli.md`; do not edit by hand. -->',
    '',
    '`bin/vsctl GROUP COMMAND [options]` runs from a checkout (it builds the project on first use).',
    'Every command takes `--help` and `--json` (results as JSON on stdout, for scripts; errors as',
    '`{"error": {"code", "message", "file", "offset"}}`). Long work draws a progress bar on stderr when',
    'stderr is a terminal.',
    '',
    'Exit status: 0 success; 1 the operation failed (or, for `check`, the disk is not valid); 2 a usage error.',
    'Sizes take binary units: `512M`, `127G`, `2T` (MiB, GiB, TiB); a bare number is bytes.',
    '',
  ];
  for (const group of commandGroups) {
    out.push(`## vsctl ${group.name}`, '', `${group.summary[0].toUpperCase()}${group.summary.slice(1)}.`, '');
    for (const command of group.commands) {
      out.push(`### vsctl ${group.name} ${command.name}`, '', '```', helpText(group.name, command), '```', '');
    }
  }
  return out.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(cliReference());
