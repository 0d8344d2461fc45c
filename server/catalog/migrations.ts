// The catalog's schema, as numbered steps. A step is never edited once released: changes are
// new steps, so that every older catalog is brought forward the same way.

export interface Migration { version: number; description: string; sql: string }

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    description: 'virtual machines, users, tokens, access entries, event log, tasks',
    sql: `
      CREATE TABLE vms (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        vmc_path TEXT NOT NULL UNIQUE,
        config TEXT NOT NULL,
        notes TEXT NOT NULL DEFAULT '',
        auto_start TEXT NOT NULL DEFAULT 'IfRunningAtQuit',
        auto_start_delay INTEGER NOT NULL DEFAULT 0,
        shutdown_action TEXT NOT NULL DEFAULT 'Save',
        running_at_quit INTEGER NOT NULL DEFAULT 0,
        created TEXT NOT NULL
      );
      CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        created TEXT NOT NULL
      );
      CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        role TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        expires TEXT,
        last_used TEXT
      );
      CREATE TABLE access_entries (
        object TEXT NOT NULL,
        principal TEXT NOT NULL,
        type TEXT NOT NULL,
        rights TEXT NOT NULL,
        PRIMARY KEY (object, principal)
      );
      CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        category TEXT NOT NULL,
        severity TEXT NOT NULL,
        message TEXT NOT NULL,
        who TEXT NOT NULL,
        object TEXT
      );
      CREATE INDEX events_object ON events(object);
      CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        object TEXT,
        owner TEXT NOT NULL,
        cancelable INTEGER NOT NULL,
        started TEXT NOT NULL,
        finished TEXT,
        percent INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        log TEXT NOT NULL
      );
    `,
  },
  {
    version: 2,
    description: 'what each task does (its kind), so that a task cut by a restart can be settled from its VM',
    sql: 'ALTER TABLE tasks ADD COLUMN kind TEXT;',
  },
  {
    version: 3,
    description: 'virtual networks (each one\'s kind, host adapter, notes, DHCP server settings and .vnc file), and vserverd\'s own settings (what a first start did)',
    sql: `
      CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        kind TEXT NOT NULL,
        host_adapter TEXT,
        notes TEXT NOT NULL DEFAULT '',
        dhcp TEXT NOT NULL,
        vnc_path TEXT NOT NULL,
        created TEXT NOT NULL
      );
      CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    `,
  },
  {
    version: 4,
    description: 'undo disk settings of each VM, the current top layer of each VM disk, snapshots and backups in progress',
    sql: `
      ALTER TABLE vms ADD COLUMN undoable INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE vms ADD COLUMN undo_action TEXT NOT NULL DEFAULT 'Discard';
      ALTER TABLE vms ADD COLUMN current_snapshot TEXT;
      CREATE TABLE disk_tops (
        vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        slot TEXT NOT NULL,
        file TEXT NOT NULL,
        PRIMARY KEY (vm_id, slot)
      );
      CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        name TEXT NOT NULL COLLATE NOCASE,
        description TEXT NOT NULL DEFAULT '',
        parent TEXT,
        created TEXT NOT NULL,
        state TEXT NOT NULL,
        layers TEXT NOT NULL,
        new_tops TEXT NOT NULL,
        memory_file TEXT,
        memory_method TEXT,
        consistency TEXT NOT NULL,
        UNIQUE (vm_id, name)
      );
      CREATE TABLE backups (
        id TEXT PRIMARY KEY,
        vm_id TEXT NOT NULL,
        folder TEXT NOT NULL,
        state TEXT NOT NULL,
        created TEXT NOT NULL,
        temporary_tops TEXT
      );
    `,
  },
];
