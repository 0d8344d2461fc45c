// The catalog: one SQLite file (better-sqlite3, WAL) in the data folder, brought to the current
// schema by numbered migrations. A catalog written by a newer vserver is refused, not guessed at.

import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS } from './migrations.js';

export type Catalog = Database.Database;

export class CatalogError extends Error {}

const statements = new WeakMap<Catalog, Map<string, Database.Statement>>();

/** The statement for `sql`, compiled once per catalog: preparing it anew on every call costs more than running it. */
export function prepared(db: Catalog, sql: string): Database.Statement {
  let cache = statements.get(db);
  if (!cache) statements.set(db, cache = new Map());
  let statement = cache.get(sql);
  if (!statement) cache.set(sql, statement = db.prepare(sql));
  return statement;
}

export function openCatalog(dataDir: string): Catalog {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  const file = path.join(dataDir, 'catalog.sqlite');
  let db: Catalog | undefined;
  try {
    db = new Database(file);
    fs.chmodSync(file, 0o600);
    db.pragma('journal_mode = WAL');
    db.pragma('foreign_keys = ON');
    // Another vserverd (or a backup tool) holding the write lock briefly is waited for, not failed on.
    db.pragma('busy_timeout = 5000');
    migrate(db, file);
  } catch (e) {
    db?.close();
    if (e instanceof CatalogError) throw e;
    throw new CatalogError(`cannot open the catalog ${file}: ${(e as Error).message}`, { cause: e });
  }
  return db;
}

export function schemaVersion(db: Catalog): number {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied TEXT NOT NULL)');
  return (db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null }).v ?? 0;
}

function migrate(db: Catalog, file: string): void {
  const current = schemaVersion(db);
  const latest = MIGRATIONS.at(-1)!.version;
  if (current > latest) {
    throw new CatalogError(`the catalog ${file} has schema version ${current}, newer than this vserver knows (${latest}); run the newer vserver, or restore a backup`);
  }
  for (const migration of MIGRATIONS.filter((m) => m.version > current)) {
    db.transaction(() => {
      db.exec(migration.sql);
      db.prepare('INSERT INTO schema_migrations (version, description, applied) VALUES (?, ?, ?)').run(migration.version, migration.description, new Date().toISOString());
    })();
  }
}
