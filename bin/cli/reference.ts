// docs/cli.md is generated from the command declarations, so the manual and --help never
// disagree: "node dist/bin/cli/reference.js > docs/cli.md" rewrites it, and a test checks it.

import { fileURLToPath } from 'node:url';
import { DEFAULT_URL } from './api-client.js';
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
    '`{"error": {"code", "message", "file", "offset"}}` from the VHD engine, `{"error": {"name", "message", "data"}}`',
    'from vserverd). Long work draws a progress bar on stderr when stderr is a terminal.',
    '',
    'Exit status: 0 success; 1 the operation failed (or, for `check`, the disk is not valid); 2 a usage error.',
    'Sizes take binary units: `512M`, `127G`, `2T` (MiB, GiB, TiB); for `vhd`, a bare number is bytes, for the',
    'commands that talk to vserverd (`--memory`, `--size`, `--new-disk`) it is MB.',
    '',
    '## Talking to vserverd',
    '',
    '`vm` (all but `run` and `check`), `net`, `cluster` (all but `test`, which builds a cluster of its own), `host`, `disk`, `task`, `events`, `token`, `call`, `login` and `logout` talk to',
    'vserverd\'s JSON-RPC API (`POST /api/rpc`, the WebSocket `/api/ws` for `events --follow`, and the serial console\'s',
    'WebSocket `/console/serial` for `vm console`). `vhd`, `vm run` and `vm check` work on this host without it.',
    '',
    `- The server: \`--url URL\`, else \`$VSERVER_URL\`, else the credentials file's \`default\`, else \`${DEFAULT_URL}\`.`,
    '- The token: `--token TOKEN`, else `$VSERVER_TOKEN`, else the credentials file\'s entry for that server.',
    '- The credentials file: `$VSERVER_CREDENTIALS`, else `${XDG_CONFIG_HOME:-~/.config}/vserver/credentials.json`:',
    '  `{"servers": {"<url>": {"token", "user"}}, "default": "<url>"}`, mode 0600 in a folder of mode 0700.',
    '  `vsctl login` writes the entry for a server and makes it the default; `vsctl logout` removes it.',
    '- Tokens for scripts come from `vsctl token create` (shown once) and go in `$VSERVER_TOKEN`.',
    '',
    'A failed call prints `vsctl: MESSAGE [NAME]` (NAME as `VM_E_ACCESS_DENIED`) and exits 1; vsctl\'s own failures to reach',
    'the server are named `VSCTL_E_...` (`VSCTL_E_UNREACHABLE`: nothing listens at the URL). Without a valid token a',
    'command says `not logged in to URL: run vsctl login, or set VSERVER_TOKEN`.',
    '',
  ];
  for (const group of commandGroups) {
    out.push(`## vsctl ${group.name}`, '', `${group.summary[0].toUpperCase()}${group.summary.slice(1)}.`, '');
    if (group.command) {
      out.push('```', helpText(null, group.command), '```', '');
      continue;
    }
    for (const command of group.commands) {
      out.push(`### vsctl ${group.name} ${command.name}`, '', '```', helpText(group.name, command), '```', '');
    }
  }
  return out.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(cliReference());
