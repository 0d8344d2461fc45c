// The turn on's first step: every host file the configuration names is checked before any disk
// is served or QEMU is spawned, so a VM that cannot start is refused by name and leaves nothing
// to undo. parseVmConfig checked the document; this checks the host against it, as it is now.
// (A MAC address in use by another running VM is the manager's to refuse: only it sees them all.)

import fs from 'node:fs';
import { VhdDisk } from '../../storage/vhd/index.js';
import { hardDisks, type VmConfig } from '../config.js';
import { portFileProblem } from '../port-file.js';
import { VmError } from '../state.js';

/** Throws the first missing or unusable file: a VhdError for a disk or its chain, else a VmError. */
export async function preflight(config: VmConfig): Promise<void> {
  for (const { path: file } of hardDisks(config)) checkDiskChain(file);
  for (const image of mediaImages(config)) {
    if (!fs.existsSync(image)) throw new VmError('VM_E_MEDIA_NOT_FOUND', `the image ${image} does not exist`);
  }
  for (const [port, connection] of Object.entries({ COM2: config.com2, LPT1: config.lpt1 })) {
    const found = connection && await portFileProblem(port, connection.file);
    if (found) throw new VmError('VM_E_PORT_FILE', found.message);
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
