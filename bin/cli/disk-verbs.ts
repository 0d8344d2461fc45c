// The disk verbs vsctl has in two forms: offline, on local files through the VHD engine
// ("vsctl vhd ..."), and through vserverd ("vsctl disk ..."). Each verb's name, arguments,
// options with their help, and the parsing of them into one typed request are declared here
// once; vhd.ts and api-disk.ts each only carry the request out (engine call or API call).

import { DISK_TYPES } from '../../server/api/vocabulary.js';
import { DEFAULT_DISK_SIZE } from '../../storage/vhd/index.js';
import { parseMegabytes } from './api-output.js';
import type { Command, OptionSpec, ParsedArgs } from './command.js';
import { parseSize, UsageError } from './terminal.js';

/** Where a verb runs: "vhd" offline through the engine, "disk" through vserverd. */
export type DiskForm = 'vhd' | 'disk';

type DiskKind = Lowercase<(typeof DISK_TYPES)[number]>;

/** The disk types, as vsctl spells them (HardDisk.get_Type's values in lower case). */
export const DISK_KINDS = DISK_TYPES.map((t) => t.toLowerCase() as DiskKind);

export const MiB = 1024 * 1024;

/** A size in whole GiB, for help text ("127 GiB"). */
export const inGiB = (bytes: number): string => `${bytes / 1024 ** 3} GiB`;

/** How each form reads --size: offline in bytes unless a unit follows; through vserverd in whole MB, as the API's sizeMB. */
const SIZES: Record<DiskForm, { valueName: string; bytes(text: string): number }> = {
  vhd: { valueName: 'N(M|G|T)', bytes: (text) => parseSize(text, '--size') },
  disk: { valueName: 'SIZE_MB', bytes: (text) => parseMegabytes(text, '--size') * MiB },
};

/** create --type's choices: offline, a differencing disk is made by --parent alone. */
const CREATE_TYPES: Record<DiskForm, readonly DiskKind[]> = {
  vhd: DISK_KINDS.filter((k) => k !== 'differencing'),
  disk: DISK_KINDS,
};

/** One verb: its name, its positional arguments, its options in a form, and its parsing into a request. */
export interface DiskVerb<Request> {
  /** The verb's name, or its name in each form where the forms name it differently. */
  name: string | Record<DiskForm, string>;
  positionals: string[];
  options(form: DiskForm): Record<string, OptionSpec>;
  request(args: ParsedArgs, form: DiskForm): Request;
}

/** What create makes; a dynamic disk without sizeBytes has the default size. */
export type CreateRequest =
  | { file: string; type: 'dynamic'; sizeBytes?: number }
  | { file: string; type: 'fixed'; sizeBytes: number }
  | { file: string; type: 'differencing'; parent: string };

export const createVerb: DiskVerb<CreateRequest> = {
  name: 'create',
  positionals: ['FILE'],
  options: (form) => ({
    size: { type: 'string', valueName: SIZES[form].valueName, description: `size in the guest (default ${inGiB(DEFAULT_DISK_SIZE)} for a dynamic disk; needed for a fixed one; not with --parent)` },
    type: { type: 'string', valueName: CREATE_TYPES[form].join('|'), description: 'disk type (default dynamic; --parent makes a differencing disk)' },
    parent: { type: 'string', valueName: 'PARENT', description: 'make a differencing disk over PARENT' },
  }),
  request(args, form) {
    const [file] = args.positionals;
    const { size, parent } = args.values;
    const types = CREATE_TYPES[form];
    const named = args.values.type === undefined ? undefined : types.find((k) => k === String(args.values.type).toLowerCase());
    if (args.values.type !== undefined && !named) throw new UsageError(`--type must be one of ${types.join(', ')}, not "${String(args.values.type)}"`);
    const type = named ?? (parent === undefined ? 'dynamic' : 'differencing');
    if (type === 'differencing') {
      if (parent === undefined) throw new UsageError('a differencing disk needs --parent PARENT');
      if (size !== undefined) throw new UsageError('--parent makes a differencing disk, which has its parent\'s size; --size is not for it');
      return { file, type, parent: String(parent) };
    }
    if (parent !== undefined) throw new UsageError(`--parent makes a differencing disk, not a ${type} one`);
    const sizeBytes = size === undefined ? undefined : SIZES[form].bytes(String(size));
    if (type === 'dynamic') return { file, type, ...(sizeBytes === undefined ? {} : { sizeBytes }) };
    if (sizeBytes === undefined) throw new UsageError(`a fixed disk needs --size ${SIZES[form].valueName}`);
    return { file, type, sizeBytes };
  },
};

/** A disk's description: `vhd info` reads it from the file, `disk inspect` from vserverd (HardDisk.get_Info). */
export const infoVerb: DiskVerb<{ file: string }> = {
  name: { vhd: 'info', disk: 'inspect' },
  positionals: ['FILE'],
  options: () => ({}),
  request: (args) => ({ file: args.positionals[0] }),
};

/** "create FILE [--size N(M|G|T)] ...": the usage line of a verb in a form. */
function usageOf(name: string, verb: DiskVerb<unknown>, options: Record<string, OptionSpec>): string {
  const flags = Object.entries(options).map(([name, spec]) => `[--${name}${spec.type === 'string' ? ` ${spec.valueName ?? 'VALUE'}` : ''}]`);
  return [name, ...verb.positionals, ...flags].join(' ');
}

/** A verb as a command of one form: the form's own summary, extra options (the connection's) and execution. */
export function diskCommand<Request>(
  verb: DiskVerb<Request>,
  form: DiskForm,
  text: { summary: string; details?: string; extraOptions?: Record<string, OptionSpec> },
  run: (request: Request, args: ParsedArgs) => Promise<number>,
): Command {
  const options = verb.options(form);
  const name = typeof verb.name === 'string' ? verb.name : verb.name[form];
  return {
    name,
    usage: usageOf(name, verb, options),
    summary: text.summary,
    ...(text.details === undefined ? {} : { details: text.details }),
    positionals: { min: verb.positionals.length, max: verb.positionals.length },
    options: { ...options, ...text.extraOptions },
    run: (args) => run(verb.request(args, form), args),
  };
}
