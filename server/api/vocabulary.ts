// The fixed lists of values the API's members take and give (auto-start rules, disk types,
// event severities, ...). A leaf module, so that the parts that store these values (the
// catalog of VMs, the event log, the website) read them without loading the members.

import { MAX_DISK_SIZE } from '../../storage/vhd/format.js';

export { ROLES } from '../auth/rights.js';
export const AUTO_START = ['Never', 'Always', 'IfRunningAtQuit'] as const;
export const SHUTDOWN_ACTIONS = ['Save', 'TurnOff', 'Shutdown'] as const;
/** What happens to a VM's undo disks when it stops (Virtual Server's VMUndoAction). */
export const UNDO_ACTIONS = ['Discard', 'Keep', 'Commit'] as const;
export const SNAPSHOT_CONSISTENCIES = ['CrashConsistent', 'FileSystemConsistent'] as const;
export { MEMORY_METHODS } from '../../vmm/state.js';
export const DISK_TYPES = ['Dynamic', 'Fixed', 'Differencing'] as const;
export const SEVERITIES = ['Information', 'Warning', 'Error'] as const;
export const EVENT_CATEGORIES = ['Virtual Server', 'Virtual Machine', 'Virtual Disk', 'Virtual Network', 'Security', 'Task', 'Cluster'] as const;
export { PORT_FILE_REFUSED } from '../../vmm/config.js';
/** The largest VHD (2040 GB, 2,088,960 MB), in MB as sizeMB parameters take it. */
export const MAX_DISK_SIZE_MB = MAX_DISK_SIZE / (1024 * 1024);
