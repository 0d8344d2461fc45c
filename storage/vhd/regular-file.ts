// Opening a file the engine reads or writes, safely whatever the path names.

import fs from 'node:fs';
import { VhdError, ioError } from './errors.js';

/**
 * Opens a file the engine is to read or write as a disk or image. Only a regular file is
 * accepted: a FIFO, socket, device or folder is refused with VHD_E_NOT_A_FILE (named in a
 * differencing disk's locator, a FIFO would otherwise block open() until someone writes to
 * it, and a device could act on being opened). stat() first, so that nothing else is ever
 * opened; O_NONBLOCK and a second check on the descriptor, so that a file swapped for a FIFO
 * between the two cannot block either. O_NONBLOCK stays set: Linux ignores it for regular
 * files (open(2)), so reads and writes behave as without it.
 */
export function openRegularFile(filePath: string, writable: boolean): number {
  try {
    refuseUnlessRegular(filePath, fs.statSync(filePath));
  } catch (e) {
    throw e instanceof VhdError ? e : ioError(filePath, 'opening', e);
  }
  const { O_RDONLY, O_RDWR, O_NONBLOCK, O_NOCTTY } = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(filePath, (writable ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_NOCTTY);
  } catch (e) {
    throw ioError(filePath, 'opening', e);
  }
  try {
    refuseUnlessRegular(filePath, fs.fstatSync(fd));
  } catch (e) {
    fs.closeSync(fd);
    throw e instanceof VhdError ? e : ioError(filePath, 'opening', e);
  }
  return fd;
}

function refuseUnlessRegular(filePath: string, stats: fs.Stats): void {
  if (stats.isFile()) return;
  const what = stats.isDirectory() ? 'a folder' : stats.isFIFO() ? 'a FIFO (named pipe)' : stats.isSocket() ? 'a socket'
    : stats.isCharacterDevice() ? 'a character device' : stats.isBlockDevice() ? 'a block device' : 'not a regular file';
  throw new VhdError('VHD_E_NOT_A_FILE', `${filePath} is ${what}; a disk or image must be a regular file`, filePath);
}

/** A small file (a lock) read whole through openRegularFile: a FIFO put in its place cannot block. */
export function readRegularFile(filePath: string): string {
  const fd = openRegularFile(filePath, false);
  try {
    return fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
}
