// Every command group vsctl knows, in the order help lists them. A group is either a set of
// commands ("vsctl vm start ...") or a single command of its own ("vsctl events ...").

import { callCommand } from './api-call.js';
import { clusterCommands, haCommand, hostCommands } from './api-cluster.js';
import { consoleCommands } from './api-console.js';
import { diskCommands, taskCommands } from './api-disk.js';
import { eventsCommand } from './api-events.js';
import { netCommands, nicCommand } from './api-net.js';
import { loginCommand, logoutCommand, tokenCommands } from './api-session.js';
import { vmApiCommands } from './api-vm.js';
import { backupCommands, snapshotCommands, undoCommand } from './api-snapshot.js';
import type { Command } from './command.js';
import { vhdCommands } from './vhd.js';
import { vmCommands } from './vm.js';

export type CommandGroup =
  | { name: string; summary: string; commands: Command[]; command?: undefined }
  | { name: string; summary: string; command: Command; commands?: undefined };

export const commandGroups: CommandGroup[] = [
  { name: 'vhd', summary: 'virtual hard disks on this host, without vserverd: create, info, check, convert, compact, merge, expand', commands: vhdCommands },
  { name: 'vm', summary: 'virtual machines in vserverd: list, show, create, start, stop, delete, nic, undo, ha, console, ...; run and check work without vserverd', commands: [...vmApiCommands, nicCommand, undoCommand, haCommand, ...consoleCommands, ...vmCommands] },
  { name: 'snapshot', summary: 'snapshots of VMs in vserverd: list, create, revert, delete', commands: snapshotCommands },
  { name: 'backup', summary: 'backups of VMs in vserverd, running or not: create, list, restore', commands: backupCommands },
  { name: 'net', summary: 'virtual networks in vserverd: list, show, create, delete, dhcp, leases', commands: netCommands },
  { name: 'cluster', summary: 'the host cluster vserverd belongs to: status, hosts, failover history; test runs failover scenarios', commands: clusterCommands },
  { name: 'host', summary: 'a host of the cluster: maintenance on|off', commands: hostCommands },
  { name: 'disk', summary: 'virtual hard disks through vserverd: create, inspect', commands: diskCommands },
  { name: 'task', summary: 'long operations in vserverd: list them, wait for one', commands: taskCommands },
  { name: 'events', summary: 'the event log of vserverd, once or followed as it grows', command: eventsCommand },
  { name: 'token', summary: 'API tokens for scripts, in vserverd: create, list, revoke', commands: tokenCommands },
  { name: 'call', summary: 'call any member of vserverd\'s API (Interface.Member key=value ...); --help lists them', command: callCommand },
  { name: 'login', summary: 'log in to vserverd and keep the token for the commands that follow', command: loginCommand },
  { name: 'logout', summary: 'forget (and revoke) the token kept for vserverd', command: logoutCommand },
];
