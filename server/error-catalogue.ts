// Every error name vserverd can give a caller, once: its JSON-RPC code, its HTTP status and what
// it means. Code that refuses something names an entry here; the VMM, the VHD engine and the
// storage roots keep their own code unions (they must not import the API), and the type check
// at the end of this file fails the build when one of their codes has no entry.

import type { VhdErrorCode } from '../storage/vhd/errors.js';
import type { VmErrorCode } from '../vmm/state.js';
import type { StoragePathCode } from './storage-roots.js';

/** JSON-RPC 2.0's own codes, and the one code (-32000) under which every other named error travels. */
const RPC_PARSE_ERROR = -32700;
const RPC_INVALID_REQUEST = -32600;
const RPC_METHOD_NOT_FOUND = -32601;
const RPC_INVALID_PARAMS = -32602;
const RPC_INTERNAL_ERROR = -32603;
const RPC_SERVER_ERROR = -32000;

export interface ErrorEntry {
  /** The JSON-RPC error.code the name travels under. */
  rpc: number;
  /**
   * The HTTP status of an answer that is this error alone: the HTTP-level refusals, POST
   * /api/login and the website's refusal pages. A JSON-RPC answer to POST /api/rpc is 200
   * whatever errors it carries.
   */
  http: number;
  /** What the name means, for the reference. */
  doc: string;
}

const named = (http: number, doc: string, rpc = RPC_SERVER_ERROR): ErrorEntry => ({ rpc, http, doc });

// 409: the state of what is acted on is in the way; 404: what the request names does not exist.
export const ERRORS = {
  // JSON-RPC and HTTP
  VM_E_PARSE_ERROR: named(400, 'the request body is not JSON', RPC_PARSE_ERROR),
  VM_E_INVALID_REQUEST: named(400, 'the JSON is not a JSON-RPC 2.0 request (or is an empty or too large batch)', RPC_INVALID_REQUEST),
  VM_E_METHOD_NOT_FOUND: named(400, 'there is no such Interface.Member; the message suggests the nearest one', RPC_METHOD_NOT_FOUND),
  VM_E_INVALID_PARAMS: named(400, 'a parameter is missing, unknown or of the wrong type; `data.param` names it', RPC_INVALID_PARAMS),
  VM_E_INTERNAL: named(500, 'a fault of vserverd itself, not of the request; the cause is in vserverd\'s log', RPC_INTERNAL_ERROR),
  VM_E_BAD_REQUEST: named(400, 'the HTTP request could not be read (a body that is not what its Content-Type says)'),
  VM_E_REQUEST_TOO_LARGE: named(413, 'the request body is over the limit (1 MB for /api/rpc)', RPC_INVALID_REQUEST),
  VM_E_CSRF: named(403, 'a call made with a session cookie lacks its X-CSRF-Token header, or comes from another site', RPC_INVALID_REQUEST),
  // Signing in and rights
  VM_E_NOT_AUTHENTICATED: named(401, 'no valid token or session'),
  VM_E_LOGIN_FAILED: named(401, 'the user name or password is wrong'),
  VM_E_TOO_MANY_ATTEMPTS: named(429, 'too many failed sign-ins for that user or from that address; Retry-After says when to try again'),
  VM_E_ACCESS_DENIED: named(403, 'the caller lacks the right the member needs; the message names it'),
  VM_E_TOKEN_REQUIRED: named(400, '`CreateConsoleTicket` with a session cookie: console tickets through the API are for bearer tokens'),
  VM_E_TOKEN_UNKNOWN: named(400, 'there is no token with that id'),
  VM_E_USER_UNKNOWN: named(400, 'there is no user (or role) of that name'),
  VM_E_USER_EXISTS: named(400, 'a user of that name exists already'),
  VM_E_WEAK_PASSWORD: named(400, 'the password is too short or too common; the message says why'),
  VM_E_LAST_ADMINISTRATOR: named(400, 'the change would leave no administrator'),
  VM_E_ENTRY_UNKNOWN: named(400, 'the object has no access entry for that name'),
  // References
  VM_E_OBJECT_UNKNOWN: named(404, 'the reference names nothing'),
  VM_E_VM_UNKNOWN: named(404, 'there is no VM with that id'),
  VM_E_TASK_UNKNOWN: named(404, 'there is no task with that id (finished tasks are kept for a while, not forever)'),
  // A VM's state
  VM_E_VM_RUNNING: named(409, 'the VM must be turned off first (configuration, removal), or is already on'),
  VM_E_VM_SAVED: named(409, 'the VM has a saved state; restore and turn it off, or discard the state'),
  VM_E_VM_NOT_RUNNING: named(409, 'the operation needs a running (or paused) VM'),
  VM_E_NO_SAVED_STATE: named(409, 'the VM has no saved state to discard'),
  VM_E_BUSY: named(409, 'the VM is in the middle of another operation; try again when it has finished'),
  VM_E_TURNED_OFF: named(400, 'the VM was turned off while it was turning on'),
  VM_E_START_FAILED: named(400, 'QEMU or the VM worker could not start; the message quotes why'),
  VM_E_SAVE_FAILED: named(400, 'the VM\'s state could not be saved (QEMU\'s migration failed, or the .vsv could not be written); the VM goes on as it was'),
  VM_E_RESTORE_FAILED: named(400, 'QEMU could not load the VM\'s saved state (a damaged .vsv); the VM stays Saved, its file untouched'),
  VM_E_QEMU_REFUSED: named(400, 'QEMU refused a command; the message quotes its answer'),
  VM_E_WORKER_GONE: named(400, 'the VM worker ended while the call waited for its answer'),
  VM_E_MAC_IN_USE: named(400, 'another VM of this host has that MAC address; the message names it'),
  VM_E_MEDIA_NOT_FOUND: named(400, 'a DVD or floppy image of the VM does not exist at turn on'),
  VM_E_LICENCE_LOST: named(409, 'a clustered VM\'s run licence (its etcd lease) could not be renewed at turn on, so it may not run on this host; the message says why'),
  VM_E_PORT_FILE: named(400, 'the folder of a serial or parallel port\'s output file does not exist at turn on'),
  VM_E_PORT_NOT_CONNECTED: named(400, '`GetSerialOutput` port 2 on a VM whose COM2 is not connected to a file'),
  // A host cluster (docs/cluster.md)
  VM_E_OWNED_ELSEWHERE: named(409, 'the VM is clustered and another host owns it (it runs there, or its lease there has not run out); the message names the host'),
  // A VM's configuration
  VM_E_CONFIG_INVALID: named(400, 'the change breaks the hardware profile; `data.problems` lists each field and limit, and nothing was changed'),
  VM_E_NAME_IN_USE: named(400, 'another VM has that name'),
  VM_E_VM_REGISTERED: named(400, 'the .vmc is a VM that is registered already'),
  VM_E_FILE_EXISTS: named(400, 'the new VM\'s .vmc exists already; register it, or choose another folder'),
  VM_E_DRIVE_IN_USE: named(400, 'the bus position is taken, or the disk is open for writing elsewhere; for a position, `data.problems` names its field and what holds it'),
  VM_E_DRIVE_INVALID: named(400, 'the bus position does not exist in the profile, or has no adapter; `data.problems` names its field'),
  // Undo disks, snapshots and backups
  VM_E_SNAPSHOT_NAME_TAKEN: named(400, 'the VM has a snapshot of that name already (names are unique per VM, regardless of case)'),
  VM_E_SNAPSHOT_UNKNOWN: named(404, 'the VM has no snapshot with that id'),
  VM_E_CONFIRM_REQUIRED: named(400, '`Snapshot.Revert` loses the VM\'s current state unless it was snapshotted: call it again with confirm=true'),
  VM_E_UNDO_AND_SNAPSHOTS: named(409, 'undo disks and snapshots do not mix on one VM: a snapshot of an undoable VM, or undo disks for a VM with snapshots, is refused'),
  VM_E_NO_UNDO_DISKS: named(409, 'the VM has no undo disks to merge or discard'),
  VM_E_BACKUP_INVALID: named(400, 'the folder holds no backup this vserver reads, a file of the set is missing, or its SHA-256 is not the one its manifest records; the message names the file'),
  VM_E_NO_SPACE: named(507, 'the file system the files are written to is full; what was written is removed, and nothing else changed'),
  // Virtual networks
  VM_E_NETWORK_UNKNOWN: named(404, 'there is no virtual network with that id or name'),
  VM_E_NETWORK_NAME_IN_USE: named(400, 'another virtual network has that name'),
  VM_E_NETWORK_IN_USE: named(409, 'network adapters are attached to the network; `data.adapters` names them'),
  VM_E_NETWORK_REGISTERED: named(400, 'the .vnc is a network that is registered already'),
  VM_E_NETWORK_FILE_INVALID: named(400, 'the file is not a .vnc this vserver reads; the message names the field at fault'),
  VM_E_NETWORK_NOT_PERMITTED: named(400, 'vserverd lacks CAP_NET_ADMIN (run it as root) or the host lacks ip, dnsmasq or nft; the message says which. Everything else works'),
  VM_E_NETWORK_FAILED: named(400, 'the host refused to make a part of the network (a bridge, TAP, address, NAT rule or the DHCP server); the message quotes the host'),
  VM_E_HOST_ADAPTER_UNKNOWN: named(400, 'the host has no interface of that name, or it cannot be bridged (loopback, a bridge of vserver\'s, another bridge\'s port)'),
  VM_E_DHCP_INVALID: named(400, 'a DHCP server setting is not an address, a mask that is not contiguous, an address outside the network, a range that is empty or holds the server, or lease times out of order; `data.problems` lists each field'),
  VM_E_DHCP_OVERLAP: named(400, 'the network address overlaps another virtual network\'s; the message names it'),
  VM_E_MAC_INVALID: named(400, 'not a MAC address under Virtual Server\'s prefix 00:03:FF'),
  // The host cluster (docs/cluster.md)
  VM_E_NOT_CLUSTERED: named(409, 'this vserverd has no cluster settings (--cluster, --etcd, --host-name, --host-address): Cluster and Host objects and a VM\'s high availability exist only in a cluster'),
  VM_E_NOT_SHARED_STORAGE: named(409, 'the VM has a file (its .vmc, a disk and its chain, its saved state) outside the shared storage every host sees (--shared-storage), so no other host could start it; the message names the first'),
  VM_E_HOST_UNKNOWN: named(404, 'no host of that name ever joined the cluster; the message lists those that did'),
  VM_E_CLUSTER_UNAVAILABLE: named(503, 'etcd did not answer in time or has lost its quorum; running VMs go on, nothing is moved, and the message says which endpoints failed'),
  VM_E_HOST_UNREACHABLE: named(503, 'the call is about a VM (or a task) on another host of the cluster, and that host is Down (nothing was done), or did not answer the forwarded call in time (it may have done it: read the VM\'s state); the message names the host'),
  VM_E_CLUSTER_NO_SECRET: named(503, 'the call is about a VM (or a task) on another host, and this host has no cluster secret (--cluster-secret-file) to forward it with; the message names the host. Call that host, or give every host the secret'),
  // Files
  VM_E_HD_IMAGE_NOT_FOUND: named(404, 'the disk file does not exist'),
  VM_E_FILE_NOT_FOUND: named(400, 'the file does not exist'),
  VM_E_INVALID_PATH: named(400, 'the path is empty, holds a NUL, cannot be followed, or is not the kind of file asked for'),
  VM_E_PATH_OUTSIDE_ROOTS: named(400, 'a path leads outside the storage roots; for a disk, any file of its chain (a parent named by a locator, or reached through a symlink): the message names the link at fault, and nothing else of the outside file is told. Startup refuses a VM whose disks\' chains, DVD or floppy image or saved state lead outside (a registered `.vmc` may name any file)'),
  VM_E_FILE_TIMEOUT: named(400, 'a file the call reads did not answer in time (a hung FUSE or network file system); the rest of the service goes on answering. Also refused at once while too many earlier file operations are still stuck'),
  // Tasks
  VM_E_TASK_NOT_CANCELABLE: named(409, 'the task has finished, or is of a kind that cannot be cancelled'),
  VM_E_TASK_CANCELLED: named(400, 'the task was cancelled'),
  VM_E_TASK_TIMEOUT: named(400, 'a task the website started has not finished after a minute'),
  VM_E_SERVICE_STOPPED: named(400, 'vserverd stopped while the task ran'),
  // The VHD engine (docs/vhd.md); the API reports VHD_E_NOT_FOUND as VM_E_HD_IMAGE_NOT_FOUND
  VHD_E_NOT_FOUND: named(400, 'the file does not exist'),
  VHD_E_NOT_A_FILE: named(400, 'a FIFO, socket, device or folder where a disk or image was expected'),
  VHD_E_EXISTS: named(400, 'the file to create already exists'),
  VHD_E_BAD_FOOTER: named(400, 'the disk\'s footer is damaged (the message gives the offset)'),
  VHD_E_BAD_HEADER: named(400, 'the dynamic disk header is damaged (the message gives the offset)'),
  VHD_E_BAD_BAT: named(400, 'the block allocation table is damaged (the message gives the offset)'),
  VHD_E_BAD_LOCATOR: named(400, 'a parent locator is damaged (the message gives the offset)'),
  VHD_E_PARENT_NOT_FOUND: named(400, 'no file the parent locators name exists'),
  VHD_E_PARENT_MISMATCH: named(400, 'the parent found is not the disk the child was made from'),
  VHD_E_CHAIN_TOO_DEEP: named(400, 'the chain of differencing disks is deeper than the engine follows'),
  VHD_E_SIZE_LIMIT: named(400, 'a size of 0, over the VHD limit, or an expand that does not grow'),
  VHD_E_OUT_OF_RANGE: named(400, 'a read or write past the end of the disk'),
  VHD_E_UNALIGNED: named(400, 'a read or write not on 512-byte sectors'),
  VHD_E_READ_ONLY: named(400, 'a write to a disk opened read-only'),
  VHD_E_LOCKED: named(400, 'another writer holds the disk (the message names it)'),
  VHD_E_WRONG_TYPE: named(400, 'an operation the disk\'s type does not allow'),
  VHD_E_BAD_ARGUMENT: named(400, 'an argument the engine cannot use'),
  VHD_E_CLOSED: named(400, 'use of a disk after it was closed'),
  VHD_E_IO: named(400, 'an error from the host\'s file system (the message names the file and what was being done)'),
} as const satisfies Record<string, ErrorEntry>;

export type ErrorName = keyof typeof ERRORS;

export function isErrorName(name: unknown): name is ErrorName {
  return typeof name === 'string' && Object.hasOwn(ERRORS, name);
}

/** A name read back from elsewhere (a stored task, another process): one the catalogue does not know is VM_E_INTERNAL. */
export function knownErrorName(name: unknown): ErrorName {
  return isErrorName(name) ? name : 'VM_E_INTERNAL';
}

type Catalogued<Name extends ErrorName> = Name;
/** The codes the VMM, the VHD engine and the storage roots declare: one without an entry above fails tsc here. */
export type LayerErrorName = Catalogued<VmErrorCode | VhdErrorCode | StoragePathCode>;

/** The body of a JSON-RPC error answer. */
export interface RpcErrorObject { code: number; message: string; data: { name: ErrorName } & Record<string, unknown> }

/** The one builder of a JSON-RPC error body: `name`'s code from the catalogue, its message and details. */
export function rpcErrorObject(name: ErrorName, message: string, details: Record<string, unknown> = {}): RpcErrorObject {
  return { code: ERRORS[name].rpc, message, data: { name, ...details } };
}
