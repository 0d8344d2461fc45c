// vserverd starts on its embedded defaults: loopback only, a data folder with its catalog, the
// sign-in page and /healthz open, everything else behind sign-in; bad settings are refused.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const main = path.resolve(import.meta.dirname, '..', 'server', 'main.js');

async function start(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [main, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /on (http:\/\/\S+?)\/ /.exec(output);
      if (match) resolve(match[1]);
    });
    child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.on('exit', (code) => reject(new Error(`vserverd exited with ${code}: ${output}`)));
  });
  return { child, url };
}

test('vserverd listens on 127.0.0.1 by default, answers /healthz and /login, and sends a signed-out browser to sign in', async () => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-'));
  const { child, url } = await start(['--port', '0', '--data', data], { VSERVER_ADMIN_PASSWORD: 'a-long-password' });
  try {
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${url}/healthz`);
    assert.equal(await health.text(), 'ok\n');
    const home = await fetch(`${url}/`, { redirect: 'manual' });
    assert.equal(home.status, 303);
    assert.equal(home.headers.get('location'), '/login');
    assert.match(await (await fetch(`${url}/login`)).text(), /<form method="post" action="\/login">/);
    assert.equal(fs.statSync(path.join(data, 'catalog.sqlite')).mode & 0o777, 0o600);
  } finally {
    child.kill('SIGTERM');
    fs.rmSync(data, { recursive: true, force: true });
  }
});

test('vserverd refuses a bad port with a clear message', async () => {
  await assert.rejects(start(['--port', 'eighty']), /port must be a whole number/);
});

test('vserverd refuses website settings out of range, naming the setting and its limits', async () => {
  await assert.rejects(start(['--port', '0'], { VSERVER_THUMBNAIL_SECONDS: '0' }), /thumbnailSeconds must be a whole number of seconds from 1 to 3600, not "0"/);
  await assert.rejects(start(['--port', '0'], { VSERVER_SESSION_MINUTES: 'soon' }), /sessionTimeoutMinutes must be a whole number of minutes from 1 to 10080, not "soon"/);
});

test('vserverd refuses a config file with an unknown setting, naming it and the known ones', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-config-'));
  const file = path.join(dir, 'vserverd.json');
  fs.writeFileSync(file, JSON.stringify({ port: 0, dataDir: 'data', storageRoot: ['/srv'] }));
  try {
    await assert.rejects(start(['--config', file]), /unknown setting "storageRoot" \(known: host, port, dataDir, storageRoots/);
    fs.writeFileSync(file, '{ "port": 0, ');
    await assert.rejects(start(['--config', file]), /cannot read the config file .*vserverd\.json/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('vserverd takes its port, data folder and storage roots from a config file, relative to the file', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-config-'));
  const file = path.join(dir, 'vserverd.json');
  fs.writeFileSync(file, JSON.stringify({ port: 0, dataDir: 'data', storageRoots: ['disks', 'isos'] }));
  const { child, url } = await start(['--config', file], { VSERVER_ADMIN_PASSWORD: 'a-long-password' });
  try {
    assert.ok(fs.existsSync(path.join(dir, 'data', 'catalog.sqlite')));
    const login = await (await fetch(`${url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'admin', password: 'a-long-password' }) })).json() as { token: string };
    const roots = await (await fetch(`${url}/api/rpc`, {
      method: 'POST', headers: { authorization: `Bearer ${login.token}` }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_StorageRoots' }),
    })).json() as { result: string[] };
    assert.deepEqual(roots.result, [path.join(fs.realpathSync(dir), 'disks'), path.join(fs.realpathSync(dir), 'isos')]);
  } finally {
    child.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
