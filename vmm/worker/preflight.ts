// The turn on's first step: every host file the configuration names is checked before any disk
// is served or QEMU is spawned, so a VM that cannot start is refused by name and leaves nothing
// to undo. parseVmConfig checked the document; this checks the host against it, as it is now.
// (A MAC address in use by another running VM is the manager's to refuse: only it sees them all.)

import fs from 'node:fs';
import path from 'node:path';
import { VhdDisk } from '../../storage/vhd/index.js';
import { hardDisks, PORT_FILE_REFUSED, type VmConfig } from '../config.js';
import { VmError } from '../state.js';

/** Throws the first missing or unusable file: a VhdError for a disk or its chain, else a VmError. */
export function preflight(config: VmConfig): void {
  for (const { path: file } of hardDisks(config)) checkDiskChain(file);
  for (const image of mediaImages(config)) {
    if (!fs.existsSync(image)) throw new VmError('VM_E_MEDIA_NOT_FOUND', `the image ${image} does not exist`);
  }
  for (const [port, connection] of Object.entries({ COM2: config.com2, LPT1: config.lpt1 })) {
    if (connection) checkPortFile(port, connection.file);
  }
}

/** Opening the disk read-only finds it and each parent, or throws what is missing or damaged. */
function checkDiskChain(file: string): void {
  VhdDisk.open(file, { writable: false }).close();
}

function mediaImages(config: VmConfig): string[] {
  const dvds = config.ide.flatMap((d) => (d.type === 'DVD' && d.image ? [d.image] : []));
  return config.floppy?.image ? [...dvds, config.floppy.image] : dvds;
}

/** QEMU creates the file (not its folder) and rewrites it from the start: it must not be a VM's own file. */
function checkPortFile(port: string, file: string): void {
  if (PORT_FILE_REFUSED.some((ext) => file.toLowerCase().endsWith(ext))) {
    throw new VmError('VM_E_PORT_FILE', `${port} would overwrite ${file}; a port writes to a text file (not ${PORT_FILE_REFUSED.join(', ')})`);
  }
  if (!fs.existsSync(path.dirname(file))) {
    throw new VmError('VM_E_PORT_FILE', `the folder of ${file} (a serial or parallel port's output) does not exist`);
  }
  if (fs.existsSync(file) && !fs.statSync(file).isFile()) throw new VmError('VM_E_PORT_FILE', `${file} is not a file; ${port} writes to a text file`);
}
