// The storage roots: every file path the API is given must really lie inside one of the
// configured folders, after `..` and symlinks are followed, whether the file exists yet or not.
//
// The file work here is synchronous, and none of it runs on vserverd's event loop during a
// request: vserverd builds StorageRoots once at start-up (the constructor, reading the
// configuration before it listens) and afterwards reads only `roots`. resolve() and list() run
// in the file worker processes (server/file-worker.ts, through server/file-workers.ts), where
// a file that never answers costs one worker, not every other call.

import fs from 'node:fs';
import path from 'node:path';

export type StoragePathCode = 'VM_E_PATH_OUTSIDE_ROOTS' | 'VM_E_FILE_NOT_FOUND' | 'VM_E_INVALID_PATH';

export class StoragePathError extends Error {
  constructor(readonly code: StoragePathCode, message: string) {
    super(message);
    this.name = 'StoragePathError';
  }
}

export interface ResolveOptions {
  /** A missing file is VM_E_FILE_NOT_FOUND instead of a path to create. */
  mustExist?: boolean;
  /** What the path is for, to name it in messages: "hard disk image". */
  kind?: string;
}

export interface StorageEntry {
  name: string;
  /** The entry's path in the listed folder; resolve() takes it back. */
  path: string;
  type: 'file' | 'folder';
  /** Bytes for a file, 0 for a folder. */
  size: number;
}

export interface StorageListing {
  /** The root the folder lies in (the innermost one, when roots are nested). */
  root: string;
  /** The folder listed, as a real absolute path. */
  path: string;
  /** Folders first, then files, each by name. */
  entries: StorageEntry[];
}

/** As Linux's own limit on symlinks followed in one lookup. */
const MAX_SYMLINK_HOPS = 40;

function errorCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

function isMissing(e: unknown): boolean {
  const code = errorCode(e);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function isInside(real: string, root: string): boolean {
  return real === root || real.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

interface Location {
  real: string;
  exists: boolean;
}

/**
 * Where a path really leads, existing or not: the real path of its deepest existing ancestor
 * with the rest appended. A dangling symlink is followed to where it points, since creating a
 * file through it would create the target.
 */
function locate(p: string, hops = 0): Location {
  try {
    return { real: fs.realpathSync(p), exists: true };
  } catch (e) {
    if (!isMissing(e)) throw e;
  }
  const parent = path.dirname(p);
  if (parent === p) return { real: p, exists: false };
  const above = locate(parent, hops);
  const candidate = path.join(above.real, path.basename(p));
  if (!above.exists) return { real: candidate, exists: false };
  let target: string | undefined;
  try {
    if (fs.lstatSync(candidate).isSymbolicLink()) target = fs.readlinkSync(candidate);
  } catch (e) {
    if (!isMissing(e)) throw e;
  }
  if (target === undefined) return { real: candidate, exists: false };
  if (hops >= MAX_SYMLINK_HOPS) throw Object.assign(new Error('too many symlinks'), { code: 'ELOOP' });
  return { real: locate(path.resolve(above.real, target), hops + 1).real, exists: false };
}

export class StorageRoots {
  /** Real absolute paths, in the order configured; the first is the default root. */
  readonly roots: readonly string[];

  /** Roots that do not exist are created. Start-up only (synchronous file work; see the file comment). */
  constructor(roots: string[]) {
    if (!Array.isArray(roots) || roots.length === 0) throw new Error('at least one storage root is needed');
    const real: string[] = [];
    for (const root of roots) {
      if (typeof root !== 'string' || root === '' || root.includes('\0')) {
        throw new Error(`a storage root must be a folder path, not ${JSON.stringify(root)}`);
      }
      const absolute = path.resolve(root);
      fs.mkdirSync(absolute, { recursive: true });
      const resolved = fs.realpathSync(absolute);
      if (!fs.statSync(resolved).isDirectory()) throw new Error(`the storage root ${absolute} is not a folder`);
      if (!real.includes(resolved)) real.push(resolved);
    }
    this.roots = Object.freeze(real);
  }

  /**
   * The real absolute path the input leads to, inside the roots. Callers must use the returned
   * path, not the input: it is the one that was checked. File workers only.
   */
  resolve(input: string, options: ResolveOptions = {}): string {
    return this.#resolve(input, options).real;
  }

  /** Lists a folder inside the roots, the first root by default. File workers only. */
  list(dir?: string): StorageListing {
    const folder = this.resolve(dir ?? this.roots[0], { mustExist: true, kind: 'folder' });
    if (!fs.statSync(folder).isDirectory()) {
      throw new StoragePathError('VM_E_INVALID_PATH', `${dir ?? folder} is not a folder`);
    }
    const entries: StorageEntry[] = [];
    for (const dirent of fs.readdirSync(folder, { withFileTypes: true })) {
      const entryPath = path.join(folder, dirent.name);
      let stats: fs.Stats;
      try {
        if (dirent.isSymbolicLink() && !this.#containing(fs.realpathSync(entryPath))) continue;
        stats = fs.statSync(entryPath);
      } catch {
        // Dangling links, loops and entries removed since readdir are not offered.
        continue;
      }
      // Sockets, devices and pipes are no use to a file picker.
      if (stats.isDirectory()) entries.push({ name: dirent.name, path: entryPath, type: 'folder', size: 0 });
      else if (stats.isFile()) entries.push({ name: dirent.name, path: entryPath, type: 'file', size: stats.size });
    }
    entries.sort((a, b) => {
      if (a.type !== b.type) return a.type === 'folder' ? -1 : 1;
      return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
    });
    return { root: this.#containing(folder) as string, path: folder, entries };
  }

  #resolve(input: unknown, options: ResolveOptions): Location {
    if (typeof input !== 'string') throw new StoragePathError('VM_E_INVALID_PATH', 'a path must be text');
    if (input === '') throw new StoragePathError('VM_E_INVALID_PATH', 'the path is empty');
    const shown = JSON.stringify(input);
    if (input.includes('\0')) throw new StoragePathError('VM_E_INVALID_PATH', `${shown} contains a NUL character`);

    // Relative to the default root, never to the server's working folder.
    const absolute = path.resolve(this.roots[0], input);
    const named = input === absolute ? absolute : `${input} (${absolute})`;
    const subject = options.kind ? `the ${options.kind} ${named}` : named;

    let location: Location;
    try {
      location = locate(absolute);
    } catch (e) {
      const reason = errorCode(e) === 'ELOOP' ? 'symlinks that loop' : errorCode(e) ?? String(e);
      throw new StoragePathError('VM_E_INVALID_PATH', `${subject} cannot be followed (${reason})`);
    }

    // Checked before existence, so that the API tells nothing about files outside the roots.
    if (!this.#containing(location.real)) {
      const roots = this.roots.join(', ');
      throw new StoragePathError(
        'VM_E_PATH_OUTSIDE_ROOTS',
        location.real === absolute
          ? `${subject} is outside the storage roots (${roots})`
          : `${subject} leads to ${location.real}, outside the storage roots (${roots})`,
      );
    }
    if (options.mustExist && !location.exists) {
      throw new StoragePathError('VM_E_FILE_NOT_FOUND', `${subject} does not exist`);
    }
    return location;
  }

  /** The innermost root holding the real path, or undefined. */
  #containing(real: string): string | undefined {
    let found: string | undefined;
    for (const root of this.roots) {
      if (isInside(real, root) && (found === undefined || root.length > found.length)) found = root;
    }
    return found;
  }
}
