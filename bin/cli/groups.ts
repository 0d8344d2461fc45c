// Every command group vsctl knows, in the order help lists them.

import type { Command } from './command.js';
import { vhdCommands } from './vhd.js';

export const commandGroups: Array<{ name: string; summary: string; commands: Command[] }> = [
  { name: 'vhd', summary: 'virtual hard disks: create, info, check, convert, compact, merge, expand', commands: vhdCommands },
];
