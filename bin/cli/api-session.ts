// vsctl's sessions with vserverd: API tokens (token create, list, revoke), login, which keeps a token
// in the credentials file (asking for the password), and logout, which forgets and revokes it.

import { fieldOf } from '../../server/api/fields.js';
import {
  credentialsFile, login, normalizeUrl, readCredentials, resolveConnection, tokenId, writeCredentials,
} from './api-client.js';
import { clientFor, CONNECTION_OPTIONS, parseValue } from './api-call.js';
import { parseCount, print, printTable } from './api-output.js';
import type { Command } from './command.js';
import { UsageError } from './terminal.js';

// ---------------------------------------------------------------------------------------------
// token

export const tokenCommands: Command[] = [
  {
    name: 'create',
    usage: 'create [--description D] [--role R] [--expires-in-days N]',
    summary: 'Create an API token for scripts (VSERVER_TOKEN, --token); it is printed once and cannot be shown again.',
    details: 'A role narrows the token below your own (Administrator, Operator, Viewer); never above it.',
    positionals: { min: 0, max: 0 },
    options: {
      description: { type: 'string', valueName: 'D', description: 'what the token is for' },
      role: { type: 'string', valueName: 'R', description: 'Administrator, Operator or Viewer (default: your role)' },
      'expires-in-days': { type: 'string', valueName: 'N', description: 'days until it stops working (default: never)' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const v = args.values;
      const params: Record<string, unknown> = {};
      if (v.description !== undefined) params.description = v.description;
      if (v.role !== undefined) {
        params.role = parseValue('--role', String(v.role), fieldOf('VirtualServer.CreateToken', 'role').type);
      }
      if (v['expires-in-days'] !== undefined) params.expiresInDays = parseCount(v['expires-in-days'], '--expires-in-days', 1);
      const created = await clientFor(v).call<{ id: string; token: string; user: string; role: string; expires: string | null }>('VirtualServer.CreateToken', params);
      print(args, created, () => {
        console.log(created.token);
        console.error(`token ${created.id} for ${created.user}, role ${created.role}, ${created.expires ? `expires ${created.expires}` : 'never expires'}.`);
        console.error('This is the only time the token is shown: it will not be shown again. Keep it somewhere safe.');
      });
      return 0;
    },
  },
  {
    name: 'list',
    usage: 'list',
    summary: 'List your API tokens (every user\'s for administrators), without their secrets.',
    positionals: { min: 0, max: 0 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      type Token = { id: string; user: string; role: string; description?: string; created?: string; expires?: string | null; lastUsed?: string | null };
      const tokens = await clientFor(args.values).call<Token[]>('VirtualServer.get_Tokens');
      print(args, tokens, () => {
        if (tokens.length === 0) console.log('no tokens');
        else printTable(['ID', 'USER', 'ROLE', 'CREATED', 'EXPIRES', 'LAST USED', 'DESCRIPTION'],
          tokens.map((t) => [t.id, t.user, t.role, t.created ?? '-', t.expires ?? 'never', t.lastUsed ?? 'never', t.description ?? '']));
      });
      return 0;
    },
  },
  {
    name: 'revoke',
    usage: 'revoke ID',
    summary: 'Revoke an API token (given by its id, or the whole token); it stops working at once.',
    positionals: { min: 1, max: 1 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const [text] = args.positionals;
      const id = tokenId(text) ?? text;
      await clientFor(args.values).call('VirtualServer.RevokeToken', { id });
      print(args, { revoked: id }, () => console.log(`revoked token ${id}`));
      return 0;
    },
  },
];

// ---------------------------------------------------------------------------------------------
// login, logout

/** A password typed on the terminal, not echoed. */
function promptPassword(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const input = process.stdin;
    process.stderr.write(prompt);
    input.setRawMode(true);
    input.resume();
    let typed = '';
    const done = (error: Error | null): void => {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
      process.stderr.write('\n');
      if (error) reject(error);
      else resolve(typed);
    };
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done(null);
        if (ch === '\u0003') return done(new UsageError('login cancelled'));
        if (ch === '\u0004') return typed ? done(null) : done(new UsageError('login cancelled: no password given'));
        if (ch === '\u007f' || ch === '\b') typed = [...typed].slice(0, -1).join('');
        else if (ch === '\u0015') typed = '';
        else if (ch >= ' ') typed += ch;
      }
    };
    input.on('data', onData);
  });
}

/** The first line of standard input. */
async function readLine(): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) {
    text += (chunk as Buffer).toString('utf8');
    if (text.includes('\n')) break;
  }
  return text.split(/\r?\n/)[0];
}

async function readPassword(user: string, url: string): Promise<string> {
  if (process.env.VSERVER_PASSWORD !== undefined) return process.env.VSERVER_PASSWORD;
  const password = process.stdin.isTTY ? await promptPassword(`password for ${user} at ${url}: `) : await readLine();
  if (!password) throw new UsageError('no password given (type it, pipe it on standard input, or set VSERVER_PASSWORD)');
  return password;
}

export const loginCommand: Command = {
  name: 'login',
  usage: 'login [--url URL] [--user NAME]',
  summary: 'Log in to vserverd and keep the token in the credentials file; later commands use it, and this server becomes the default.',
  details: [
    'The password is read from $VSERVER_PASSWORD, else from standard input when it is not a terminal (one line), else',
    'asked for on the terminal without echo. The token is kept in $VSERVER_CREDENTIALS, or',
    '${XDG_CONFIG_HOME:-~/.config}/vserver/credentials.json, readable by you only (mode 0600).',
  ].join('\n'),
  positionals: { min: 0, max: 0 },
  options: {
    url: CONNECTION_OPTIONS.url,
    user: { type: 'string', valueName: 'NAME', description: 'the user (default: the one last logged in to this URL, else admin)' },
  },
  async run(args) {
    const { url } = resolveConnection({ url: args.values.url });
    const file = credentialsFile();
    const user = (args.values.user as string | undefined) ?? readCredentials(file).servers[url]?.user ?? 'admin';
    const password = await readPassword(user, url);
    const session = await login(url, user, password);
    const credentials = readCredentials(file);
    credentials.servers[url] = { token: session.token, user: session.user };
    credentials.default = url;
    await writeCredentials(file, credentials);
    print(args, { url, user: session.user, role: session.role ?? null, expires: session.expires ?? null, credentials: file },
      () => console.log(`logged in to ${url} as ${session.user}`));
    return 0;
  },
};

export const logoutCommand: Command = {
  name: 'logout',
  usage: 'logout [--url URL]',
  summary: 'Forget the token kept for the server (and revoke it in vserverd, when it can be reached).',
  positionals: { min: 0, max: 0 },
  options: { url: CONNECTION_OPTIONS.url },
  async run(args) {
    const url = typeof args.values.url === 'string' ? normalizeUrl(args.values.url, '--url') : resolveConnection({}).url;
    const file = credentialsFile();
    const credentials = readCredentials(file);
    const entry = credentials.servers[url];
    if (!entry) {
      print(args, { url, loggedOut: false }, () => console.log(`not logged in to ${url}`));
      return 0;
    }
    const id = tokenId(entry.token);
    let revoked = false;
    if (id) {
      const client = clientFor({ url, token: entry.token });
      revoked = await client.call('VirtualServer.RevokeToken', { id }).then(() => true, () => false);
    }
    delete credentials.servers[url];
    if (credentials.default === url) delete credentials.default;
    await writeCredentials(file, credentials);
    print(args, { url, loggedOut: true, revoked }, () => console.log(`logged out of ${url}${revoked ? '' : ' (the token could not be revoked in vserverd)'}`));
    return 0;
  },
};
