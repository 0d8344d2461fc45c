// The object model of vserver's API: Virtual Server 2005 R2's COM interfaces (IVMVirtualServer,
// IVMVirtualMachine, IVMTask, ...) as JSON-RPC methods "Interface.Member". Each member is declared
// once, beside its handler, in server/api/members/*; INTERFACES holds those records for the
// dispatcher, and SCHEMA is the same declarations without the handlers, which GET /api/schema
// serves and docs/api.md and vsctl's help are generated from.

import type { InterfaceRecord } from './member-types.js';
import { clusterInterface, hostInterface } from './members/cluster.js';
import { hardDisk } from './members/hard-disk.js';
import { security } from './members/security.js';
import { snapshot } from './members/snapshot.js';
import { task } from './members/task.js';
import { virtualMachine } from './members/virtual-machine.js';
import { dhcpServer, virtualNetwork } from './members/virtual-network.js';
import { virtualServer } from './members/virtual-server.js';
import { networkAdapter } from './members/network-adapter.js';
import { displayInterface, dvdDrive, guestOS, hardDiskConnection, scsiController } from './members/vm-parts.js';
import type { InterfaceSpec, MemberSpec, Schema } from './schema-types.js';

export { AUTO_START, DISK_TYPES, EVENT_CATEGORIES, PORT_FILE_REFUSED, ROLES, SEVERITIES, SHUTDOWN_ACTIONS } from './vocabulary.js';

/** Every interface with its members' declarations and handlers, by name. */
export const INTERFACES: Record<string, InterfaceRecord> = {
  VirtualServer: virtualServer,
  VirtualMachine: virtualMachine,
  HardDiskConnection: hardDiskConnection,
  DVDROMDrive: dvdDrive,
  SCSIController: scsiController,
  NetworkAdapter: networkAdapter,
  GuestOS: guestOS,
  Display: displayInterface,
  Snapshot: snapshot,
  Task: task,
  HardDisk: hardDisk,
  Security: security,
  VirtualNetwork: virtualNetwork,
  DHCPVirtualNetworkServer: dhcpServer,
  Cluster: clusterInterface,
  Host: hostInterface,
};

function declarationOf({ doc, ref, members }: InterfaceRecord): InterfaceSpec {
  const specs: Record<string, MemberSpec> = {};
  for (const [name, { handler: _handler, ...spec }] of Object.entries(members)) specs[name] = spec;
  return { doc, ref, members: specs };
}

/** The declarations alone. */
export const SCHEMA: Schema = Object.fromEntries(Object.entries(INTERFACES).map(([name, record]) => [name, declarationOf(record)]));

/** Events sent over the WebSocket as JSON-RPC notifications. */
export const EVENTS: Record<string, { doc: string; params: Record<string, string> }> = {
  'VirtualMachine.OnStateChange': { doc: 'A VM changed state.', params: { vm: 'object reference', name: 'the VM\'s name', state: 'VMVMState name', previous: 'VMVMState name or null', reason: 'why it stopped (or crashed), or null' } },
  'Task.OnProgress': { doc: 'A task progressed or finished.', params: { task: 'object reference', description: 'string', percentCompleted: 'integer', isComplete: 'boolean', error: '{name, message} or null' } },
  'VirtualNetwork.OnChange': { doc: 'A virtual network was created, registered, changed (settings, DHCP server, an adapter attached or detached) or removed.', params: { network: 'object reference', name: 'the network\'s name', change: 'created, changed or removed' } },
  'Cluster.OnHostStateChange': { doc: 'A host of the cluster changed state (joined, went Down, entered or left Maintenance); sent to callers who may read the server.', params: { cluster: 'object reference', host: 'object reference (Host/<name>)', name: 'the host\'s name', state: 'Up, Down, Maintenance or Joining', previous: 'the state before, or null for a host not seen before' } },
  'VirtualMachine.OnFailover': { doc: 'A clustered VM failed over, or a step of its failover was reached (sent again as it goes: detected, fenced, started, running). The same record is in Cluster.get_FailoverHistory.', params: { vm: 'object reference', name: 'the VM\'s name', failover: 'the failover\'s id', from: 'the host it ran on', to: 'the host it restarts on, or null until chosen', reason: 'why it moved', seconds: 'seconds from detection to running (a fraction), or null until running', detected: 'ISO 8601', fenced: 'ISO 8601 or null', started: 'ISO 8601 or null', running: 'ISO 8601 or null', error: 'why it did not complete, or null' } },
  'VirtualServer.OnEventLogged': { doc: 'An entry was added to the event log.', params: { id: 'integer', time: 'ISO 8601', category: 'string', severity: 'string', message: 'string', who: 'string', object: 'object reference or null' } },
};

/** Errors every member may return. */
export const COMMON_ERRORS = ['VM_E_NOT_AUTHENTICATED', 'VM_E_ACCESS_DENIED', 'VM_E_INVALID_PARAMS', 'VM_E_OBJECT_UNKNOWN', 'VM_E_PATH_OUTSIDE_ROOTS', 'VM_E_FILE_TIMEOUT'] as const;
