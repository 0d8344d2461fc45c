// The catalog: a SQLite file in WAL mode, brought to the current schema by numbered migrations
// that run once; a catalog from a newer vserver is refused rather than guessed at.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { CatalogError, openCatalog, schemaVersion } from '../server/catalog/database.js';
import { MIGRATIONS } from '../server/catalog/migrations.js';
import { makeTempDir, removeDir } from './helpers/vhd-fixtures.js';

const work = makeTempDir('catalog');
after(() => removeDir(work));

test('a new catalog is created at the latest schema version, in WAL mode, readable by its owner only', () => {
  const dir = path.join(work, 'new');
  const db = openCatalog(dir);
  try {
    assert.equal(schemaVersion(db), MIGRATIONS.at(-1)!.version);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((t) => t.name);
    for (const table of ['vms', 'users', 'tokens', 'access_entries', 'events', 'tasks']) assert.ok(tables.includes(table), `no table ${table}`);
    assert.equal(fs.statSync(path.join(dir, 'catalog.sqlite')).mode & 0o777, 0o600);
  } finally {
    db.close();
  }
});

test('reopening runs no migration twice and keeps the data', () => {
  const dir = path.join(work, 'reopen');
  const first = openCatalog(dir);
  first.prepare("INSERT INTO users (name, password_hash, role, created) VALUES ('kept', 'x', 'Viewer', 'now')").run();
  first.close();
  const second = openCatalog(dir);
  try {
    const applied = second.prepare('SELECT version FROM schema_migrations').all() as { version: number }[];
    assert.deepEqual(applied.map((r) => r.version), MIGRATIONS.map((m) => m.version));
    assert.equal((second.prepare("SELECT role FROM users WHERE name = 'kept'").get() as { role: string }).role, 'Viewer');
  } finally {
    second.close();
  }
});

test('a catalog written by a newer vserver is refused, naming both versions, and left as it was', () => {
  const dir = path.join(work, 'newer');
  openCatalog(dir).close();
  const file = path.join(dir, 'catalog.sqlite');
  const raw = new Database(file);
  raw.prepare("INSERT INTO schema_migrations (version, description, applied) VALUES (999, 'from the future', 'later')").run();
  raw.close();
  const before = fs.readFileSync(file);
  assert.throws(() => openCatalog(dir), (e: Error) => e instanceof CatalogError && e.message.includes(`schema version 999, newer than this vserver knows (${MIGRATIONS.at(-1)!.version})`));
  assert.deepEqual(fs.readFileSync(file), before);
});

test('a file that is not a SQLite database is refused with the file named', () => {
  const dir = path.join(work, 'garbage');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'catalog.sqlite'), 'this is not a database, just text that is long enough to look like a header');
  assert.throws(() => openCatalog(dir), (e: Error) => /catalog\.sqlite/.test(e.message) && /not a database/.test(e.message));
});
