// The cluster settings of server/config.ts: flags, environment and the config file's "cluster"
// object, and the refusals of partial or malformed ones.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../server/config.js';

const ROOT = os.tmpdir();
const FLAGS = ['--cluster', 'prod', '--etcd', 'http://10.0.0.1:2379,https://etcd-2.example:2379', '--host-name', 'h1', '--host-address', '10.0.0.11:8080'];

test('no cluster settings: a single host', () => {
  assert.equal(loadConfig([], {}, ROOT).cluster, null);
});

test('flags give the cluster settings; etcd is required unless --cluster-optional', () => {
  const cluster = loadConfig([...FLAGS, '--shared-storage', '/srv/vm', '--shared-storage', '/srv/vm2'], {}, ROOT).cluster;
  assert.deepEqual(cluster, { name: 'prod', etcd: ['http://10.0.0.1:2379', 'https://etcd-2.example:2379'], hostName: 'h1', hostAddress: '10.0.0.11:8080', sharedStorage: ['/srv/vm', '/srv/vm2'], required: true, secret: null });
  assert.equal(loadConfig([...FLAGS, '--cluster-optional'], {}, ROOT).cluster?.required, false);
});

test('the environment gives them too, and the address defaults to the listen address and port', () => {
  const cluster = loadConfig(['--port', '9000'], { VSERVER_CLUSTER: 'c1', VSERVER_ETCD: 'http://127.0.0.1:23790', VSERVER_HOST_NAME: 'n-1', VSERVER_SHARED_STORAGE: '/a:/b', VSERVER_CLUSTER_OPTIONAL: '1' }, ROOT).cluster;
  assert.deepEqual(cluster, { name: 'c1', etcd: ['http://127.0.0.1:23790'], hostName: 'n-1', hostAddress: '127.0.0.1:9000', sharedStorage: ['/a', '/b'], required: false, secret: null });
});

test('the config file\'s "cluster" object, paths relative to the file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-config-'));
  try {
    const file = path.join(dir, 'vserver.json');
    fs.writeFileSync(file, JSON.stringify({ cluster: { name: 'x', etcd: ['http://e:1'], hostName: 'h', hostAddress: 'h.example:80', sharedStorage: ['shared'], required: false } }));
    assert.deepEqual(loadConfig(['--config', file], {}, ROOT).cluster, { name: 'x', etcd: ['http://e:1'], hostName: 'h', hostAddress: 'h.example:80', sharedStorage: [path.join(dir, 'shared')], required: false, secret: null });
    fs.writeFileSync(file, JSON.stringify({ cluster: { name: 'x', etcd: ['http://e:1'], nodes: 3 } }));
    assert.throws(() => loadConfig(['--config', file], {}, ROOT), (e: Error) => e instanceof ConfigError && /"cluster" in the config file: unknown setting "nodes"/.test(e.message));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('partial or malformed cluster settings are refused by name', () => {
  const refused = (argv: string[], pattern: RegExp): void => {
    assert.throws(() => loadConfig(argv, {}, ROOT), (e: Error) => e instanceof ConfigError && pattern.test(e.message), `${argv.join(' ')}`);
  };
  refused(['--host-name', 'h1'], /need --cluster NAME and --etcd URL/);
  refused(['--cluster', 'prod'], /the cluster "prod" needs etcd's client URLs/);
  refused(['--etcd', 'http://e:1'], /--etcd needs --cluster NAME/);
  refused(['--cluster', 'Prod_1', '--etcd', 'http://e:1'], /the cluster name "Prod_1" may hold only a-z, 0-9 and -/);
  refused(['--cluster', 'p', '--etcd', 'e:2379'], /"e:2379" is not an etcd client URL of the form http\(s\):\/\/HOST:PORT/);
  refused(['--cluster', 'p', '--etcd', 'http://e'], /"http:\/\/e" is not an etcd client URL/);
  refused(['--cluster', 'p', '--etcd', 'http://e:1', '--host-name', 'H.1'], /the host name "H.1" may hold only a-z, 0-9 and -/);
  refused(['--cluster', 'p', '--etcd', 'http://e:1', '--host-name', 'h', '--host-address', '10.0.0.1'], /the host address "10.0.0.1" must be HOST:PORT/);
  refused(['--cluster', 'p', '--etcd', 'http://e:1', '--host-name', 'h', '--host-address', '10.0.0.1:99999'], /must be HOST:PORT/);
});

test('the cluster secret is read from a file (flag, environment, or the config file relative to it); a short or missing one is refused; the cluster address is an allowed Host', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-config-'));
  try {
    const secret = 'x'.repeat(40);
    const file = path.join(dir, 'secret');
    fs.writeFileSync(file, `${secret}\n`);
    const config = loadConfig([...FLAGS, '--cluster-secret-file', file], {}, ROOT);
    assert.equal(config.cluster?.secret, secret);
    assert.ok(config.allowedHosts.includes('10.0.0.11:8080'));
    assert.equal(loadConfig(FLAGS, { VSERVER_CLUSTER_SECRET_FILE: file }, ROOT).cluster?.secret, secret);
    const json = path.join(dir, 'vserver.json');
    fs.writeFileSync(json, JSON.stringify({ cluster: { name: 'x', etcd: ['http://e:1'], secretFile: 'secret' } }));
    assert.equal(loadConfig(['--config', json], {}, ROOT).cluster?.secret, secret);
    fs.writeFileSync(file, 'short');
    assert.throws(() => loadConfig([...FLAGS, '--cluster-secret-file', file], {}, ROOT), (e: Error) => e instanceof ConfigError && /has 5 characters; it needs at least 32/.test(e.message));
    assert.throws(() => loadConfig([...FLAGS, '--cluster-secret-file', path.join(dir, 'none')], {}, ROOT), (e: Error) => e instanceof ConfigError && /cannot read the cluster secret file/.test(e.message));
    assert.throws(() => loadConfig(['--cluster-secret-file', file], {}, ROOT), (e: Error) => e instanceof ConfigError && /need --cluster NAME/.test(e.message));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
