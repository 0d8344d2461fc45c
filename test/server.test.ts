// vserverd starts on its embedded defaults: loopback only, a data folder, a page and /healthz.
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

test('vserverd listens on 127.0.0.1 by default and answers / and /healthz', async () => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-'));
  const { child, url } = await start(['--port', '0', '--data', data]);
  try {
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${url}/healthz`);
    assert.equal(await health.text(), 'ok\n');
    const page = await (await fetch(`${url}/`)).text();
    assert.match(page, /placeholder/);
    assert.ok(fs.statSync(data).isDirectory());
  } finally {
    child.kill('SIGTERM');
    fs.rmSync(data, { recursive: true, force: true });
  }
});

test('vserverd refuses a bad port with a clear message', async () => {
  await assert.rejects(start(['--port', 'eighty']), /port must be a whole number/);
});
