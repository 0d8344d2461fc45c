// How vsctl declares a command: its usage line, its help text, its options, and what it does.
// Every command gets --help and --json from here.

import { type ParseArgsConfig, parseArgs } from 'node:util';
import { UsageError } from './terminal.js';

export type OptionSpec = NonNullable<ParseArgsConfig['options']>[string] & { description: string; valueName?: string };

export interface Command {
  name: string;
  usage: string;
  summary: string;
  details?: string;
  positionals: { min: number; max: number };
  options: Record<string, OptionSpec>;
  /** Its arguments reach run() as they are, in positionals (a command that parses its own: "cluster test"). */
  rawArgs?: boolean;
  /** Help that depends on the arguments ("vsctl call Interface.Member --help"); helpText otherwise. */
  help?(positionals: string[], standard: string): string;
  run(args: ParsedArgs): Promise<number>;
}

export interface ParsedArgs {
  positionals: string[];
  values: Record<string, string | boolean | undefined>;
  json: boolean;
}

const COMMON: Record<string, OptionSpec> = {
  json: { type: 'boolean', description: 'print the result as JSON, for scripts' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

/** "vsctl vm start NAME", or "vsctl login [--url URL]" for a command that is its own group (group null). */
function usageLine(group: string | null, command: Command): string {
  return `usage: vsctl ${group === null ? '' : `${group} `}${command.usage}`;
}

export function helpText(group: string | null, command: Command): string {
  const options = { ...command.options, ...COMMON };
  const rows = Object.entries(options).map(([name, spec]) => {
    const flag = `--${name}${spec.type === 'string' ? ` ${spec.valueName ?? 'VALUE'}` : ''}`;
    return `  ${flag.padEnd(26)} ${spec.description}`;
  });
  return [usageLine(group, command), '', command.summary, ...(command.details ? ['', command.details] : []), '', 'options:', ...rows].join('\n');
}

/** Parses argv for one command; prints help and returns null when --help was asked for. */
export function parseCommand(group: string | null, command: Command, argv: string[]): ParsedArgs | null {
  if (command.rawArgs) return { positionals: argv, values: {}, json: argv.includes('--json') };
  const options = Object.fromEntries(
    Object.entries({ ...command.options, ...COMMON }).map(([name, { description: _d, valueName: _v, ...spec }]) => [name, spec]),
  );
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (parsed.values.help) {
    const standard = helpText(group, command);
    console.log(command.help ? command.help(parsed.positionals, standard) : standard);
    return null;
  }
  const { min, max } = command.positionals;
  if (parsed.positionals.length < min || parsed.positionals.length > max) {
    throw new UsageError(usageLine(group, command));
  }
  return {
    positionals: parsed.positionals,
    values: parsed.values as ParsedArgs['values'],
    json: parsed.values.json === true,
  };
}
