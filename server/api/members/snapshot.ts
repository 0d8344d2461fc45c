// Snapshot (`Snapshot/<vm id>/<id>`), and the members of VirtualMachine about its disk layers:
// undo disks (Undoable, UndoAction, MergeUndoDisks, DiscardUndoDisks) and snapshots
// (CreateSnapshot, get_Snapshots, get_CurrentSnapshot). The work is server/disk-layers.ts's and
// server/snapshots.ts's; docs/snapshots.md says how it behaves.

import { hasControlCharacter } from '../../../vmm/config.js';
import type { SnapshotRecord } from '../../layer-store.js';
import type { VmRecord } from '../../machines.js';
import { ApiError, invalidParams } from '../../errors.js';
import { boolean, type Call, field, integer, type InterfaceRecord, listOf, membersOf, object, oneOf, orNull, param, refOf, string } from '../member-types.js';
import { ref, type Reference } from '../../references.js';
import { MEMORY_METHODS, SNAPSHOT_CONSISTENCIES, UNDO_ACTIONS } from '../vocabulary.js';
import { VM_EXAMPLE, VM_ID_EXAMPLE } from './shared.js';

const SNAPSHOT_ID_EXAMPLE = '2b7e4f1c-8a3d-4c5e-9f6a-1d2c3b4a5e6f';
const SNAPSHOT_EXAMPLE = `Snapshot/${VM_ID_EXAMPLE}/${SNAPSHOT_ID_EXAMPLE}`;
const vmMembers = membersOf<'VirtualMachine'>(VM_EXAMPLE);
const { get, put, task } = membersOf<'Snapshot'>(SNAPSHOT_EXAMPLE);

const snapshotRef = (s: SnapshotRecord): Reference => ref('Snapshot', `${s.vmId}/${s.id}`);
const object_ = (vm: VmRecord): string => `VirtualMachine/${vm.id}`;

/** A task on `vm`'s layers: its progress on the task, its result what `work` returns. */
function layerTask(call: Call<'VirtualMachine' | 'Snapshot', unknown>, vm: VmRecord, description: string, work: (progress: (percent: number, phase?: string, bytes?: number) => void) => Promise<object | null | void>): Reference {
  const started = call.services.tasks.start(`${description}`, object_(vm), call.principal.user, {}, async (t) => (await work((p, phase, bytes) => t.progress(p, phase, bytes))) ?? null);
  return ref('Task', started.id);
}

export const vmLayerMembers: InterfaceRecord['members'] = {
  get_Undoable: vmMembers.get('Whether the VM writes to undo disks (NAME_SLOT.vud beside its .vmc) instead of its disks, as Virtual Server\'s Undo Disks.', boolean, false, ({ self }) => self.undoable),
  put_Undoable: vmMembers.put('Turns undo disks on or off; only while the VM is turned off. Turning them off discards the undo disks (the event log names each file); turning them on is refused while the VM has snapshots (VM_E_UNDO_AND_SNAPSHOTS).', boolean, true,
    async ({ services, self, params }) => { await services.layers.setUndoable(self, params.value); }, ['VM_E_VM_RUNNING', 'VM_E_VM_SAVED', 'VM_E_UNDO_AND_SNAPSHOTS']),
  get_UndoAction: vmMembers.get('What happens to the undo disks when the guest shuts itself down, and TurnOff\'s default: Discard (the default), Keep or Commit.', oneOf(UNDO_ACTIONS), 'Discard', ({ self }) => self.undoAction),
  put_UndoAction: vmMembers.put('Sets the undo action; allowed while the VM runs.', oneOf(UNDO_ACTIONS), 'Commit',
    ({ services, self, params }) => services.machines.setSettings(self.id, { undoAction: params.value })),
  MergeUndoDisks: vmMembers.task('Commits the undo disks into the VM\'s disks (they are then gone); refused unless the VM is turned off.', 'change', {}, {},
    (call) => {
      const vm = call.self;
      call.services.machines.refuseUnlessOff(vm);
      if (!call.services.layers.undoDisks(vm).length) throw new ApiError('VM_E_NO_UNDO_DISKS', `${vm.name} has no undo disks`);
      return layerTask(call, vm, `Merge the undo disks of ${vm.name}`, async (progress) => ({
        message: await call.services.layers.applyUndoAction(vm, 'Commit', (d, t) => progress(t ? (d / t) * 100 : 0, 'merging', d)),
      }));
    }, ['VM_E_VM_RUNNING', 'VM_E_VM_SAVED', 'VM_E_NO_UNDO_DISKS']),
  DiscardUndoDisks: vmMembers.method('Deletes the undo disks: the VM\'s disks are as they were before it was turned on with them. Refused unless the VM is turned off.', {
    returns: object({ discarded: field(listOf(string), 'The files removed') }), right: 'change', errors: ['VM_E_VM_RUNNING', 'VM_E_VM_SAVED', 'VM_E_NO_UNDO_DISKS'],
    example: { params: {}, result: { discarded: ['/var/lib/vserver/web/web_scsi0-0.vud'] } },
    handler: async ({ services, self }) => {
      services.machines.refuseUnlessOff(self);
      const files = services.layers.undoDisks(self).map((d) => d.file);
      if (!files.length) throw new ApiError('VM_E_NO_UNDO_DISKS', `${self.name} has no undo disks`);
      await services.layers.applyUndoAction(self, 'Discard');
      return { discarded: files };
    },
  }),
  CreateSnapshot: vmMembers.task('Takes a snapshot: every disk of the VM switched at one instant to a new differencing child (a running guest is held for that instant only), the previous files becoming the snapshot\'s read-only layers. With includeMemory, a running VM\'s memory and device state is saved too (get_MemoryMethod says how). The task\'s result is the Snapshot. Refused for an undoable VM (VM_E_UNDO_AND_SNAPSHOTS) and a Saved one.', 'change',
    {
      name: param({ type: 'string', maxLength: 64 }, 'Its name, unique among the VM\'s snapshots regardless of case.'),
      description: param({ type: 'string', maxLength: 10_000 }, 'Free text.', true),
      includeMemory: param(boolean, 'Save the running VM\'s memory too, so that Revert resumes it running.', true),
    },
    { name: 'before upgrade', includeMemory: false },
    (call) => {
      const vm = call.self;
      const name = call.params.name.trim();
      if (!name || hasControlCharacter(name)) throw invalidParams('a snapshot name is 1 to 64 characters without control characters', { param: 'name' });
      const { snapshots } = call.services;
      snapshots.refuseCreate(vm, name);
      const request = { name, description: call.params.description ?? '', includeMemory: call.params.includeMemory ?? false };
      return layerTask(call, vm, `Create snapshot ${name} of ${vm.name}`, async (progress) => snapshotRef(await snapshots.create(vm, request, progress)));
    }, ['VM_E_SNAPSHOT_NAME_TAKEN', 'VM_E_UNDO_AND_SNAPSHOTS', 'VM_E_VM_SAVED', 'VM_E_BUSY']),
  get_Snapshots: vmMembers.get('The snapshot tree, each snapshot after its parent (siblings oldest first), with its depth in the tree and whether it is the current one (the one the VM\'s disks go on from).',
    listOf(object({
      snapshot: field(refOf('Snapshot'), 'The snapshot'), name: field(string, 'Its name'), parent: field(orNull(refOf('Snapshot')), 'Its parent, or null for a root'),
      depth: field(integer, '0 for a root'), current: field(boolean, 'Whether the VM goes on from it'), created: field(string, 'When, ISO 8601'),
    })),
    [{ snapshot: { $ref: SNAPSHOT_EXAMPLE }, name: 'before upgrade', parent: null, depth: 0, current: true, created: '2026-12-05T10:00:00.000Z' }],
    ({ services, self }) => {
      const current = services.layers.store.currentSnapshot(self.id);
      return services.snapshots.tree(self).map(({ snapshot: s, depth }) => ({
        snapshot: snapshotRef(s), name: s.name, parent: s.parent ? ref('Snapshot', `${self.id}/${s.parent}`) : null, depth, current: s.id === current, created: s.created,
      }));
    }),
  get_CurrentSnapshot: vmMembers.get('The snapshot the VM\'s disks go on from (the last taken or reverted to), or null.', orNull(refOf('Snapshot')), { $ref: SNAPSHOT_EXAMPLE },
    ({ services, self }) => {
      const id = services.layers.store.currentSnapshot(self.id);
      return id ? ref('Snapshot', `${self.id}/${id}`) : null;
    }),
};

export const snapshot: InterfaceRecord = {
  doc: 'A snapshot of a VM: its disks (and perhaps its memory) at one instant, kept as read-only layers. Rights are the VM\'s.',
  ref: 'Snapshot/<vm id>/<id>',
  members: {
    get_Name: get('The name.', string, 'before upgrade', ({ self }) => self.snapshot.name),
    get_Description: get('Free text.', string, 'kernel 6.1, before the upgrade to 6.6', ({ self }) => self.snapshot.description),
    put_Description: put('Sets the description.', { type: 'string', maxLength: 10_000 }, 'kernel 6.1',
      ({ services, self, params }) => services.layers.store.updateSnapshot(self.snapshot.id, { description: params.value })),
    get_CreationTime: get('When it was taken, ISO 8601.', string, '2026-12-05T10:00:00.000Z', ({ self }) => self.snapshot.created),
    get_Parent: get('The snapshot that was current when it was taken, or null.', orNull(refOf('Snapshot')), null,
      ({ self }) => (self.snapshot.parent ? ref('Snapshot', `${self.vm.id}/${self.snapshot.parent}`) : null)),
    get_Children: get('The snapshots taken from it.', listOf(refOf('Snapshot')), [],
      ({ services, self }) => services.snapshots.children(self.snapshot).map(snapshotRef)),
    get_IncludesMemory: get('Whether it holds the VM\'s memory (Revert then resumes the VM running).', boolean, false, ({ self }) => self.snapshot.memoryFile !== null),
    get_Consistency: get('CrashConsistent (the disks as after a power cut: no guest agent froze the file systems) or FileSystemConsistent.', oneOf(SNAPSHOT_CONSISTENCIES), 'CrashConsistent',
      ({ self }) => self.snapshot.consistency),
    get_MemoryMethod: get('How the memory was saved: background-snapshot (the guest ran on during the whole save), live-save (the guest ran on and was held for the last pass) or paused-save (held for the whole save); null without memory.', orNull(oneOf(MEMORY_METHODS)), null,
      ({ self }) => self.snapshot.memoryMethod),
    Revert: task('Returns the VM to this snapshot: a running VM is turned off first and its current state is lost (snapshot it first to keep it), so confirm must be true. The VM is then running if the snapshot holds memory, turned off otherwise.', 'control',
      { confirm: param(boolean, 'true: the current state may be lost.') }, { confirm: true },
      (call) => {
        const { vm, snapshot: s } = call.self;
        if (call.params.confirm !== true) throw new ApiError('VM_E_CONFIRM_REQUIRED', `reverting ${vm.name} to ${s.name} loses its current state; call again with confirm=true`);
        call.services.snapshots.refuseBetweenStates(vm);
        return layerTask(call, vm, `Revert ${vm.name} to snapshot ${s.name}`, (progress) => call.services.snapshots.revert(vm, s.id, progress));
      }, ['VM_E_CONFIRM_REQUIRED', 'VM_E_BUSY']),
    Delete: task('Deletes the snapshot: its layer is merged into the layers after it (while the VM runs, the guest sees nothing) and its files removed. The VM\'s current state is kept.', 'change', {}, {},
      (call) => {
        const { vm, snapshot: s } = call.self;
        call.services.snapshots.refuseBetweenStates(vm);
        return layerTask(call, vm, `Delete snapshot ${s.name} of ${vm.name}`, (progress) => call.services.snapshots.delete(vm, s.id, progress));
      }, ['VM_E_BUSY']),
  },
};

