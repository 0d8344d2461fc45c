// Virtual Disks: Create (dynamic, fixed, differencing) and Inspect (everything the API reports
// about a VHD, its parent chain, and Merge, Merge To, Convert, Compact and Expand). Each change
// is an API task: the form redirects to the task's page (server/site/tasks.ts), where its
// progress shows. A refusal comes back beside the field it concerns, with nothing made.

import path from 'node:path';
import type { Response, Router } from 'express';
import type { ApiError } from '../errors.js';
import { fieldOf } from '../api/fields.js';
import { hardDisks, type VmConfig } from '../../vmm/config.js';
import { type FieldErrors, type SiteContext, type SiteRequest, api, can, refuseFor, refusalStatus, refusePage } from './context.js';
import { refusalErrors, refuseForm, text } from './forms.js';
import { answerTask, taskRoutes } from './tasks.js';

interface Ref { $ref: string }
type Body = Record<string, unknown>;

const DISK_TYPES = ['Dynamic', 'Fixed', 'Differencing'] as const;
const CREATE_METHODS: Record<string, string> = {
  Dynamic: 'VirtualServer.CreateDynamicVirtualHardDisk',
  Fixed: 'VirtualServer.CreateFixedVirtualHardDisk',
  Differencing: 'VirtualServer.CreateDifferencingVirtualHardDisk',
};

/** The largest disk, as the API declares it, for the forms' hints. */
export const MAX_SIZE_MB = fieldOf('VirtualServer.CreateFixedVirtualHardDisk', 'sizeMB').max ?? Number.MAX_SAFE_INTEGER;
/** The types Convert writes, as it declares them. */
const CONVERT_TYPES = fieldOf('HardDisk.Convert', 'type').choices ?? [];
/** The size a new dynamic disk is offered with, as CreateDynamicVirtualHardDisk's default (127 GB). */
export const DEFAULT_DYNAMIC_GB = 127;

/** A size field and its unit (MB or GB) as whole MB; nothing when the field is empty. */
function sizeInMB(size: unknown, unit: unknown): { sizeMB?: number; error?: string } {
  const given = text(size);
  if (given === '') return {};
  const value = Number(given);
  if (!Number.isFinite(value)) return { error: `the size must be a number, not "${given}"` };
  const mb = unit === 'GB' ? value * 1024 : value;
  if (!Number.isInteger(mb)) return { error: `the size must come to a whole number of MB (${given} ${unit === 'GB' ? 'GB' : 'MB'} is ${mb} MB)` };
  return { sizeMB: mb };
}

/** Bytes as people read them: "136,365,211,648 bytes (127 GB)". */
export function formatBytes(bytes: number): string {
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = '';
  for (const next of units) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  const exact = `${bytes.toLocaleString('en-US')} bytes`;
  return unit ? `${exact} (${Number(value.toFixed(1))} ${unit})` : exact;
}

const PATH_ERRORS = new Set(['VM_E_PATH_OUTSIDE_ROOTS', 'VM_E_INVALID_PATH', 'VM_E_FILE_NOT_FOUND']);

/** Which field of the Create form a refusal is about. */
function createField(e: ApiError): string | undefined {
  if (e.errorName === 'VHD_E_EXISTS') return 'path';
  if (e.errorName === 'VHD_E_SIZE_LIMIT') return 'size';
  if (e.errorName === 'VM_E_HD_IMAGE_NOT_FOUND') return 'parent';
  // The API names the path it refuses "the new disk ..." or "the parent disk ...".
  if (PATH_ERRORS.has(e.errorName)) return e.message.startsWith('the parent disk') ? 'parent' : 'path';
  // Only a differencing disk's parent is read before the task starts.
  return e.errorName.startsWith('VHD_E_') ? 'parent' : undefined;
}

interface CreateForm { type: string; path: string; size: string; unit: string; parent: string }

function createPage(ctx: SiteContext, req: SiteRequest, res: Response, form: CreateForm, errors: FieldErrors): void {
  res.render('disks/create', {
    title: 'Create Virtual Disk', form, errors, types: DISK_TYPES, maxSizeMB: MAX_SIZE_MB, defaultDynamicGB: DEFAULT_DYNAMIC_GB,
    roots: ctx.services.roots.roots, canCreate: can(ctx, req, 'change', 'VirtualServer'),
  });
}

async function createDisk(ctx: SiteContext, req: SiteRequest, res: Response): Promise<void> {
  const body = req.body as Body;
  const form: CreateForm = { type: text(body.type), path: text(body.path), size: text(body.size), unit: body.unit === 'MB' ? 'MB' : 'GB', parent: text(body.parent) };
  const again = (status: number, errors: FieldErrors) => refuseForm(req, res, status, errors, () => createPage(ctx, req, res, form, errors));
  if (!Object.hasOwn(CREATE_METHODS, form.type)) return again(400, { type: `choose the type of disk: ${DISK_TYPES.join(', ')}` });
  const params: Record<string, unknown> = { path: form.path };
  if (form.type === 'Differencing') {
    params.parentPath = form.parent;
  } else {
    const size = sizeInMB(form.size, form.unit);
    if (size.error) return again(400, { size: size.error });
    params.sizeMB = size.sizeMB;
  }
  try {
    answerTask(req, res, await api<Ref>(ctx, req, CREATE_METHODS[form.type], params));
  } catch (error) {
    const status = refusalStatus(error, 'form');
    if (status === 403) return refuseFor(req, res, error, 'Create');
    return again(status, refusalErrors(error, createField, { path: 'path', parentPath: 'parent', sizeMB: 'size' }));
  }
}

interface Operation {
  method: string;
  /** The API's parameters from the form, or a message for the field it cannot take. */
  params(body: Body): { params: Record<string, unknown> } | { field: string; error: string };
}

/** The HardDisk operations the Inspect page offers; form fields are named "<operation>-<field>". */
const OPERATIONS: Record<string, Operation> = {
  merge: { method: 'HardDisk.Merge', params: () => ({ params: {} }) },
  'merge-to': { method: 'HardDisk.MergeTo', params: (body) => ({ params: { path: text(body.target) } }) },
  convert: { method: 'HardDisk.Convert', params: (body) => ({ params: { path: text(body.target), type: text(body.type) } }) },
  compact: { method: 'HardDisk.Compact', params: () => ({ params: {} }) },
  expand: {
    method: 'HardDisk.Expand',
    params: (body) => {
      const size = sizeInMB(body.size, body.unit);
      if (size.error) return { field: 'size', error: size.error };
      return { params: { sizeMB: size.sizeMB } };
    },
  },
};

/** Which field of an operation's form a refusal is about. */
function operationField(operation: string): (e: ApiError) => string | undefined {
  return (e) => {
    if (e.errorName === 'VHD_E_EXISTS' || PATH_ERRORS.has(e.errorName)) return `${operation}-target`;
    if (e.errorName === 'VHD_E_SIZE_LIMIT') return `${operation}-size`;
    return undefined;
  };
}

interface Inspection {
  file: string;
  type: string;
  properties: { label: string; value: string }[];
  chain: { file: string; type: string }[];
  warnings: string[];
  attachedTo: { id: string; name: string }[];
  sizeMB: number;
  sizeInGuest: string;
}

interface DiskInfo {
  file: string; sizeInGuest: number; sizeOnHost: number; fileSize: number; originalSize: number; currentSize: number;
  geometry: { cylinders: number; heads: number; sectorsPerTrack: number }; addressableSize: number; sizeRule: string;
  creator: { application: string; version: string; hostOs: string }; uniqueId: string; created: string; modified: string;
  savedState: boolean; blockSize: number | null; blocks: { allocated: number; total: number } | null;
  parent: { file: string; uniqueId: string; timestamp: string; name: string } | null;
  chain: { file: string; type: string }[]; warnings: string[];
}

/** The VMs (that the caller may see) with this disk attached. */
async function vmsUsing(ctx: SiteContext, req: SiteRequest, file: string): Promise<{ id: string; name: string }[]> {
  const vms = await api<Ref[]>(ctx, req, 'VirtualServer.get_VirtualMachines');
  const using: { id: string; name: string }[] = [];
  for (const vm of vms) {
    // A VM whose host cannot answer (Down) is left out.
    const config = await api<VmConfig>(ctx, req, 'VirtualMachine.get_Configuration', { this: vm.$ref }).catch(() => null);
    if (config && hardDisks(config).some((d) => d.path === file)) using.push({ id: vm.$ref.slice('VirtualMachine/'.length), name: config.name });
  }
  return using;
}

/** Everything the API reports about the disk at `input`. */
async function inspect(ctx: SiteContext, req: SiteRequest, input: string): Promise<Inspection> {
  const disk = (await api<Ref>(ctx, req, 'VirtualServer.GetHardDisk', { path: input })).$ref;
  const read = <T>(member: string): Promise<T> => api<T>(ctx, req, `HardDisk.${member}`, { this: disk });
  const info = await read<DiskInfo>('get_Info');
  const type = await read<string>('get_Type');
  const time = (iso: string): string => iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const g = info.geometry;
  const properties = [
    { label: 'File', value: info.file },
    { label: 'Type', value: type },
    { label: 'Size in the guest', value: formatBytes(info.sizeInGuest) },
    { label: 'Size on the host', value: formatBytes(info.sizeOnHost) },
    { label: 'File size', value: formatBytes(info.fileSize) },
    { label: 'Original size (footer)', value: formatBytes(info.originalSize) },
    { label: 'Current size (footer)', value: formatBytes(info.currentSize) },
    { label: 'Geometry', value: `${g.cylinders} cylinders, ${g.heads} heads, ${g.sectorsPerTrack} sectors per track` },
    { label: 'Addressable by geometry', value: formatBytes(info.addressableSize) },
    { label: 'Size rule', value: info.sizeRule === 'chs' ? 'geometry (as Virtual PC and Virtual Server read it)' : 'current size' },
    { label: 'Unique ID', value: info.uniqueId },
    { label: 'Created', value: time(info.created) },
    { label: 'Modified', value: time(info.modified) },
    { label: 'Creator', value: `${info.creator.application} ${info.creator.version} (${info.creator.hostOs})` },
    { label: 'Saved state flag', value: info.savedState ? 'set' : 'not set' },
    ...(info.blockSize === null ? [] : [{ label: 'Block size', value: formatBytes(info.blockSize) }]),
    ...(info.blocks ? [{ label: 'Blocks allocated', value: `${info.blocks.allocated.toLocaleString('en-US')} of ${info.blocks.total.toLocaleString('en-US')}` }] : []),
    ...(info.parent ? [
      { label: 'Parent', value: info.parent.file },
      { label: 'Parent unique ID', value: info.parent.uniqueId },
      { label: 'Parent time stamp', value: time(info.parent.timestamp) },
    ] : []),
    { label: 'Free space on the host', value: formatBytes(await read<number>('get_HostFreeDiskSpace')) },
  ];
  return {
    file: info.file, type, properties, chain: info.chain, warnings: info.warnings,
    attachedTo: await vmsUsing(ctx, req, info.file),
    // The smallest whole MB not below the present size: Expand's starting value.
    sizeMB: Math.ceil(info.sizeInGuest / (1024 * 1024)), sizeInGuest: formatBytes(info.sizeInGuest),
  };
}

/** Suggested names for the files Convert and Merge To write, beside the disk. */
function suggestions(disk: Inspection): Record<string, string> {
  const base = path.join(path.dirname(disk.file), path.basename(disk.file, path.extname(disk.file)));
  const convertTo = disk.type === 'Fixed' ? 'Dynamic' : 'Fixed';
  return {
    'convert-type': convertTo,
    'convert-target': `${base}-${convertTo.toLowerCase()}.vhd`,
    'merge-to-target': `${base}-merged.vhd`,
    'expand-size': String(disk.sizeMB),
    'expand-unit': 'MB',
  };
}

/**
 * The Inspect page; `failed` and `values` bring back a refused operation's form as it was sent.
 * A disk that cannot be read shows why beside the path field.
 */
async function inspectPage(ctx: SiteContext, req: SiteRequest, res: Response, input: string, refused: { operation: string; values: Record<string, string>; errors: FieldErrors } | null): Promise<void> {
  let disk: Inspection | null = null;
  let errors: FieldErrors = refused?.errors ?? {};
  if (input) {
    try {
      disk = await inspect(ctx, req, input);
    } catch (error) {
      errors = { ...errors, ...refusalErrors(error, 'path', { path: 'path' }) };
      if (!refused) res.status(refusalStatus(error));
    }
  }
  res.render('disks/inspect', {
    title: 'Inspect Virtual Disk', input, disk, errors, failed: refused?.operation ?? null,
    values: { ...(disk ? suggestions(disk) : {}), ...refused?.values },
    canChange: can(ctx, req, 'change', 'VirtualServer'), maxSizeMB: MAX_SIZE_MB, convertTypes: CONVERT_TYPES,
  });
}

async function startOperation(ctx: SiteContext, req: SiteRequest, res: Response, name: string): Promise<void> {
  const operation = OPERATIONS[name];
  const body = req.body as Body;
  const disk = text(body.path);
  const values = Object.fromEntries(['target', 'type', 'size', 'unit'].filter((f) => typeof body[f] === 'string').map((f) => [`${name}-${f}`, String(body[f])]));
  const again = (status: number, errors: FieldErrors) => refuseForm(req, res, status, errors, () => inspectPage(ctx, req, res, disk, { operation: name, values, errors }));
  if (!disk) return again(400, { path: 'name the disk to change' });
  const given = operation.params(body);
  if ('error' in given) return again(400, { [`${name}-${given.field}`]: given.error });
  try {
    const reference = (await api<Ref>(ctx, req, 'VirtualServer.GetHardDisk', { path: disk })).$ref;
    answerTask(req, res, await api<Ref>(ctx, req, operation.method, { this: reference, ...given.params }));
  } catch (error) {
    const status = refusalStatus(error, 'form');
    if (status === 403) return refuseFor(req, res, error, operation.method.split('.')[1]);
    return again(status, refusalErrors(error, operationField(name), { path: `${name}-target`, type: `${name}-type`, sizeMB: `${name}-size` }));
  }
}

export function diskRoutes(router: Router, ctx: SiteContext): void {
  router.get('/disks/create', (req: SiteRequest, res: Response) => {
    createPage(ctx, req, res, { type: 'Dynamic', path: '', size: String(DEFAULT_DYNAMIC_GB), unit: 'GB', parent: '' }, {});
  });
  router.post('/disks/create', (req: SiteRequest, res: Response) => createDisk(ctx, req, res));

  router.get('/disks/inspect', (req: SiteRequest, res: Response) => inspectPage(ctx, req, res, text(req.query.path), null));
  router.post('/disks/:operation', (req: SiteRequest, res: Response) => {
    const name = String(req.params.operation);
    if (!Object.hasOwn(OPERATIONS, name)) return refusePage(req, res, 404, `there is no disk operation "${name}"; one of ${Object.keys(OPERATIONS).join(', ')}`);
    return startOperation(ctx, req, res, name);
  });

  // The task pages belong to every kind of task; they are mounted here, with the disks that need them most.
  taskRoutes(router, ctx);
}
