// Every command group vsctl knows, in the order help lists them.

import type { Command } from './command.js';
import { vhdCommands } from './vhd.js';
import { vmCommands } from './vm.js';

export const commandGroups: Array<{ name: string; summary: string; commands: Command[] }> = [
  { name: 'vhd', summary: 'virtual hard disks: create, info, check, convert, compact, merge, expand', commands: vhdCommands },
  { name: 'vm', summary: 'virtual machines without vserverd: run one in the foreground, check a configuration', commands: vmCommands },
];
