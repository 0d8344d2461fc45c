// vsctl: vserver's command line. "vsctl GROUP COMMAND [args]", or "vsctl COMMAND [args]" for a
// group that is a single command (call, events, login, logout); every command has --help and --json.

import { VhdError } from '../storage/vhd/index.js';
import { ApiCallError } from './cli/api-client.js';
import { type Command, parseCommand } from './cli/command.js';
import { commandGroups } from './cli/groups.js';
import { UsageError } from './cli/terminal.js';

const groups = Object.fromEntries(commandGroups.map((g) => [g.name, g]));

function usage(): string {
  const lines = ['usage: vsctl GROUP COMMAND [options]   (vsctl GROUP --help lists the commands)', '', 'groups:'];
  for (const [name, group] of Object.entries(groups)) lines.push(`  ${name.padEnd(10)} ${group.summary}`);
  return lines.join('\n');
}

function groupUsage(name: string, commands: Command[]): string {
  return [`usage: vsctl ${name} COMMAND [options]`, '', 'commands:', ...commands.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`),
    '', `"vsctl ${name} COMMAND --help" describes one.`].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [groupName, commandName, ...rest] = argv;
  if (!groupName || groupName === '--help' || groupName === '-h' || groupName === 'help') {
    (groupName ? console.log : console.error)(usage());
    return groupName ? 0 : 2;
  }
  const group = groups[groupName];
  if (!group) throw new UsageError(`unknown group "${groupName}"\n${usage()}`);
  if (group.command) {
    const args = parseCommand(null, group.command, argv.slice(1));
    return args ? group.command.run(args) : 0;
  }
  if (!commandName || commandName === '--help' || commandName === '-h') {
    (commandName ? console.log : console.error)(groupUsage(groupName, group.commands));
    return commandName ? 0 : 2;
  }
  const command = group.commands.find((c) => c.name === commandName);
  if (!command) throw new UsageError(`unknown command "${groupName} ${commandName}"\n${groupUsage(groupName, group.commands)}`);
  const args = parseCommand(groupName, command, rest);
  return args ? command.run(args) : 0;
}

const json = process.argv.includes('--json');
main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (error: unknown) => {
    if (error instanceof UsageError) {
      console.error(`vsctl: ${error.message}`);
      process.exitCode = 2;
    } else if (error instanceof ApiCallError) {
      if (json) console.log(JSON.stringify({ error: { name: error.name, message: error.message, data: error.data } }, null, 2));
      else console.error(`vsctl: ${error.message} [${error.name}]`);
      process.exitCode = 1;
    } else if (error instanceof VhdError) {
      if (json) console.log(JSON.stringify({ error: { code: error.code, message: error.message, file: error.file, offset: error.offset } }, null, 2));
      else console.error(`vsctl: ${error.message} [${error.code}]`);
      process.exitCode = 1;
    } else {
      console.error(`vsctl: ${(error as Error)?.stack ?? String(error)}`);
      process.exitCode = 1;
    }
  },
);
