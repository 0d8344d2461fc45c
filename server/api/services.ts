// Everything a call may use, handed to each handler in one value.

import type { AccessControl } from '../auth/access.js';
import type { Users } from '../auth/users.js';
import type { Catalog } from '../catalog/database.js';
import type { EventLog } from '../event-log.js';
import type { FileWorkers } from '../file-workers.js';
import type { Machines } from '../machines.js';
import type { StorageRoots } from '../storage-roots.js';
import type { Tasks } from '../tasks.js';
import type { VirtualNetworks } from '../virtual-networks.js';
import type { Sessions } from '../http/sessions.js';
import type { Backups } from '../backups.js';
import type { DiskLayers } from '../disk-layers.js';
import type { Snapshots } from '../snapshots.js';
import type { ClusterService } from '../cluster/model.js';
import type { CallForwarder } from '../cluster/forward.js';

export interface Services {
  db: Catalog;
  machines: Machines;
  /** The virtual networks and their host parts. */
  networks: VirtualNetworks;
  tasks: Tasks;
  /** Each VM's disk layers: the tops, undo disks, one change at a time. */
  layers: DiskLayers;
  snapshots: Snapshots;
  backups: Backups;
  events: EventLog;
  users: Users;
  access: AccessControl;
  roots: StorageRoots;
  /** File work for calls (lookups in the roots, VHD inspection), off the event loop with a time limit. */
  files: FileWorkers;
  /** Browser sessions, ended when their user is deleted or given a new password. */
  sessions: Sessions;
  /** The host cluster this vserverd belongs to; null on a host without cluster settings. */
  cluster: ClusterService | null;
  /** Sends calls about VMs and tasks of other hosts there; null on a host without cluster settings. */
  forwarder: CallForwarder | null;
  hostName: string;
  version: string;
  startedAt: number;
}
