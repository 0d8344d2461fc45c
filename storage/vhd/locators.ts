// Parent locators of differencing disks: where to look for the parent, in the order Windows
// and VirtualBox use (relative path first, then absolute, then the name beside the child), and
// the pair of W2ru/W2ku entries this engine writes for a new child.

import path from 'node:path';
import { type DynamicHeader, type ParentLocator, SECTOR_SIZE, decodeUtf16, encodeUtf16, roundUp } from './format.js';
import { locatorDataSpaceBytes, readAt } from './layout.js';

export interface ParentCandidate {
  source: string;
  path: string;
}

const SEARCH_ORDER = ['W2ru', 'Wi2r', 'W2ku', 'Wi2k', 'MacX'];

/** Turns a stored Windows or URL path into a path on this host, or null when it cannot be one. */
function hostPath(stored: string, childDir: string): string | null {
  let p = stored.trim();
  if (!p) return null;
  if (p.startsWith('file://')) {
    try {
      p = decodeURIComponent(new URL(p).pathname);
    } catch {
      return null;
    }
  }
  if (/^[A-Za-z]:[\\/]/.test(p) || p.startsWith('\\\\')) return null; // a drive letter or UNC share: not on this host
  p = p.replace(/\\/g, '/');
  return path.isAbsolute(p) ? path.normalize(p) : path.resolve(childDir, p);
}

function decodeLocator(fd: number, locator: ParentLocator): string {
  const length = Math.min(locator.platformDataLength, locatorDataSpaceBytes(locator) || locator.platformDataLength, 65536);
  const data = readAt(fd, length, locator.platformDataOffset);
  if (locator.platformCode === 'MacX') return data.toString('utf8').replace(/\0.*$/s, '');
  if (locator.platformCode === 'W2ru' || locator.platformCode === 'W2ku') return decodeUtf16(data, 'le');
  return data.toString('latin1').replace(/\0.*$/s, '');
}

/** Every place the parent may be, best first, without duplicates. */
export function parentCandidates(fd: number, childPath: string, header: DynamicHeader): ParentCandidate[] {
  const childDir = path.dirname(path.resolve(childPath));
  const found: ParentCandidate[] = [];
  const add = (source: string, p: string | null): void => {
    if (p && !found.some((c) => c.path === p)) found.push({ source, path: p });
  };
  for (const code of SEARCH_ORDER) {
    for (const locator of header.parentLocators) {
      if (locator.platformCode !== code || locator.platformDataLength === 0) continue;
      add(`${code} locator`, hostPath(decodeLocator(fd, locator), childDir));
    }
  }
  const name = header.parentName.replace(/\\/g, '/');
  if (name) add('parent name beside the child', path.resolve(childDir, path.basename(name)));
  return found;
}

export interface LocatorPlan {
  locators: ParentLocator[];
  /** Data areas to write after the block table: [offset, bytes]. */
  areas: Array<[number, Buffer]>;
  end: number;
}

/**
 * Lays out W2ru (relative, ".\parent.vhd" style) and W2ku (absolute) entries from `start`,
 * each in a sector-aligned area, space counted in bytes as Windows writes it.
 */
export function planLocators(childPath: string, parentPath: string, start: number): LocatorPlan {
  const relative = path.relative(path.dirname(path.resolve(childPath)), path.resolve(parentPath));
  const windowsRelative = (relative.startsWith('..') ? relative : `.${path.sep}${relative}`).replace(/\//g, '\\');
  const entries: Array<[string, string]> = [
    ['W2ru', windowsRelative],
    ['W2ku', path.resolve(parentPath)],
  ];
  const locators: ParentLocator[] = [];
  const areas: Array<[number, Buffer]> = [];
  let offset = start;
  for (const [code, text] of entries) {
    const data = encodeUtf16(text, 'le');
    const space = roundUp(Math.max(data.length, 1), SECTOR_SIZE);
    locators.push({ platformCode: code, platformDataSpace: space, platformDataLength: data.length, platformDataOffset: offset });
    areas.push([offset, data]);
    offset += space;
  }
  while (locators.length < 8) locators.push({ platformCode: '', platformDataSpace: 0, platformDataLength: 0, platformDataOffset: 0 });
  return { locators, areas, end: offset };
}
