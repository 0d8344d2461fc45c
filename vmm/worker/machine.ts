// One virtual machine inside its worker: QEMU under a pseudo-terminal (COM1), its disks served
// by this project's NBD server, QMP for control. Each operation is one recipe that reads top to
// bottom and moves through Virtual Server's state sequence for it.

import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as pty from 'node-pty';
import { fsyncFile } from '../../host/files.js';
import { finishesWithin } from '../../host/time.js';
import { crashPoint } from '../../storage/crash-points.js';
import { draftOf } from '../../storage/drafts.js';
import { ChangeMap } from '../../storage/nbd/change-map.js';
import { serveFile, type ServedFile } from '../../storage/nbd/index.js';
import { hardDisks, tapName, type VmConfig } from '../config.js';
import { chooseEngine, type EngineProbe } from '../engine.js';
import type { VmPaths } from '../paths.js';
import { type DiskSource, qemuArgs } from '../qemu-args.js';
import { QmpClient, QmpError, type QmpEvent } from '../qmp.js';
import { isActive, type MemoryMethod, VmError, type VmState, type VmStatus } from '../state.js';
import { SerialConsole } from './console.js';
import {
  type ClosedMap, MapHandover, type MergeOutcome, type ServedDisk, commitIntoParentOnline, discardPrepared, mergeIntoChildOnline, prepareTops,
  servedDisks, switchTops,
} from './layers.js';
import type { LicenceKeeper } from './licence.js';
import { preflight } from './preflight.js';
import type { QemuAccount } from './user.js';

export interface MachineOptions {
  config: VmConfig;
  paths: VmPaths;
  /** The unprivileged account QEMU runs as when the worker is root; null to stay as we are. */
  runAs: QemuAccount | null;
  log: (line: string) => void;
  /** A clustered VM's run licence: renewed before QEMU starts, and asked before each disk write. */
  licence?: LicenceKeeper | null;
}

/** How far an operation is: its phase ("saving memory"), percent of the whole, and the bytes the phase has moved so far. */
export interface Progress { operation: string; percent: number; bytes?: number }

interface Running {
  terminal: pty.IPty;
  qmp: QmpClient | null;
  exited: Promise<void>;
}

const SAVE_POLL_MS = 100;
/** How long QEMU may take to capture the device state of a background snapshot and resume the guest. */
const BACKGROUND_START_MS = 30_000;
/** How long a live save may copy memory while the guest runs before QEMU is told to finish in one last pass, however long. */
const LIVE_CONVERGE_MS = 20_000;
/** Bound on a live save's wait for QEMU to hold the guest. */
const LIVE_SAVE_MS = 10 * 60_000;
/** A save goes to a local file: QEMU's default limit (128 MiB/s, meant for networks) would only slow it. */
const SAVE_BANDWIDTH = 8 * 1024 * 1024 * 1024;
/**
 * The downtime QEMU aims at in a save's last pass: far below its default (300 ms, for networks),
 * since a live save holds the guest for that pass. Set again before each save (a save told to
 * finish at once raised it).
 */
const SAVE_DOWNTIME_MS = 10;
/** The downtime that makes QEMU finish a live save that does not converge at once (QEMU's largest). */
const FINISH_NOW_DOWNTIME_MS = 2_000_000;

export interface SnapshotRequest {
  layers: Array<{ slot: string; file: string }>;
  memory?: { file: string };
  changeMaps?: { generation: string };
}

export interface SnapshotResult {
  /** How long the guest was held, from QMP stop to its resumption (0 when it was paused already). */
  pauseMs: number;
  previous: Array<{ slot: string; file: string }>;
  memory?: { file: string; bytes: number; method: MemoryMethod; fallbackReason?: string };
  changeMaps?: ClosedMap[];
}

export interface MergeRequest { slot: string; layer: string; direction: 'intoChild' | 'intoParent' }

export class VirtualMachine extends EventEmitter<{ state: [VmStatus]; progress: [Progress]; disks: [VmStatus] }> {
  readonly console = new SerialConsole();
  status: VmStatus;
  private readonly config: VmConfig;
  private readonly paths: VmPaths;
  private qemu: Running | null = null;
  private disks: ServedFile[] = [];
  private operation: string | null = null;
  /** Per adapter, the TAP QEMU was given at turn on (vserverd makes them when it manages host networks). */
  private tapsAtStart: (string | null)[] = [];
  /** Why QEMU is expected to exit; unset, an exit is a crash (unless the guest powered off). */
  private stopping: string | null = null;
  private guestPoweredOff = false;
  private savedStateWritten = false;

  constructor(private readonly options: MachineOptions) {
    super();
    this.config = options.config;
    this.paths = options.paths;
    this.status = {
      id: this.config.id, name: this.config.name, workerPid: process.pid, since: new Date().toISOString(),
      state: fs.existsSync(this.config.savedState) ? 'Saved' : 'TurnedOff',
    };
  }

  /** Virtual Server's Startup: boots, or restores when there is saved state. */
  turnOn(): Promise<VmStatus> {
    return this.exclusive('turn on', ['TurnedOff', 'Saved'], async () => {
      const restoring = this.status.state === 'Saved';
      this.setState('TurningOn', { crashed: undefined, stopReason: undefined, fenced: undefined });
      try {
        // First, before anything is served or spawned: every file the VM names is there and usable.
        await preflight(this.config);
        // A clustered VM starts only on a renewed licence: the first renewal is acknowledged first.
        await this.options.licence?.begin();
        const engine = await chooseEngine(this.config.engine);
        await this.serveDisks();
        const running = this.spawnQemu(engine, this.qemuCommandLine(engine, restoring));
        await this.connectQmp(running);
        if (restoring) await this.restoreSavedState();
        await this.unplugDisconnectedAdapters();
        // Keep this last: from here on the guest runs.
        await this.qmp().execute('cont');
        if (restoring) fs.rmSync(this.config.savedState, { force: true });
        this.setState('Running', { runningSince: new Date().toISOString() });
      } catch (e) {
        const stoppedBy = this.stopping;
        await this.abandonStart(restoring ? 'Saved' : 'TurnedOff');
        // A turn off during the start makes the start's next step fail (QEMU is gone); say what happened.
        if (stoppedBy) {
          const why = stoppedBy === 'turned off' ? '' : ` (${stoppedBy})`;
          throw new VmError('VM_E_TURNED_OFF', `${this.config.name} was turned off while it was turning on${why}`);
        }
        throw e;
      }
      return this.status;
    });
  }

  /** Pulls the power: QEMU stops at once; what the guest had not written is lost. */
  async turnOff(reason = 'turned off'): Promise<VmStatus> {
    const running = this.qemu;
    if (!running) throw new VmError('VM_E_VM_NOT_RUNNING', `${this.config.name} is not running (it is ${this.status.state})`);
    this.stopping ??= reason;
    if (this.status.state !== 'TurningOff') this.setState('TurningOff');
    try {
      await this.qmp().execute('quit');
    } catch {
      running.terminal.kill('SIGKILL');
    }
    await running.exited;
    return this.status;
  }

  /**
   * The run licence has ended: the disks' gate is closed already (it asks the licence), so
   * nothing QEMU sends from now on is applied; QEMU is killed at once and the disks are closed
   * without a write. The VM ends TurnedOff with `fenced` in its status.
   */
  async fence(reason: string): Promise<void> {
    this.status = { ...this.status, fenced: { reason, at: new Date().toISOString() } };
    const running = this.qemu;
    if (!running) return;
    this.stopping ??= `fenced: ${reason}`;
    running.terminal.kill('SIGKILL');
    await running.exited;
  }

  /** Presses the ACPI power button; if the guest has not powered off within the timeout, turns it off. */
  shutdown(timeoutMs = 120_000): Promise<VmStatus> {
    return this.exclusive('shut down', ['Running'], async () => {
      const running = this.qemu!;
      await this.qmp().execute('system_powerdown');
      const exited = await finishesWithin(running.exited, timeoutMs);
      if (!exited && this.qemu === running) await this.turnOff(`turned off: the guest did not shut down within ${timeoutMs / 1000} s`);
      return this.status;
    });
  }

  /** Saves the VM's memory and device state to its .vsv and stops it: Saving, TurningOff, TurnedOff, Saved. */
  save(): Promise<VmStatus> {
    return this.exclusive('save', ['Running', 'Paused'], async () => {
      const before = this.status.state;
      this.setState('Saving');
      const partial = draftOf(this.config.savedState);
      try {
        await this.qmp().execute('stop');
        await this.writeSavedState(partial);
        fs.renameSync(partial, this.config.savedState);
      } catch (e) {
        fs.rmSync(partial, { force: true });
        if (this.qemu && before === 'Running') await this.qmp().execute('cont').catch(() => {});
        if (this.qemu) this.setState(before);
        // A file system's refusal (the .vsv's place taken by a folder, a full disk) is the save's failure, named.
        throw e instanceof VmError || e instanceof QmpError ? e : new VmError('VM_E_SAVE_FAILED', `save failed: ${(e as Error).message}`);
      }
      this.savedStateWritten = true;
      this.stopping = 'saved';
      this.setState('TurningOff');
      await this.qmp().execute('quit').catch(() => this.qemu?.terminal.kill('SIGKILL'));
      await this.qemu?.exited;
      return this.status;
    });
  }

  pause(): Promise<VmStatus> {
    return this.exclusive('pause', ['Running'], async () => {
      await this.qmp().execute('stop');
      this.setState('Paused');
      return this.status;
    });
  }

  resume(): Promise<VmStatus> {
    return this.exclusive('resume', ['Paused'], async () => {
      await this.qmp().execute('cont');
      this.setState('Running');
      return this.status;
    });
  }

  /** A hardware reset: TurningOff, TurningOn, Running; the guest boots again. */
  reset(): Promise<VmStatus> {
    return this.exclusive('reset', ['Running', 'Paused'], async () => {
      this.setState('TurningOff');
      await this.qmp().execute('system_reset');
      this.setState('TurningOn');
      await this.qmp().execute('cont');
      this.setState('Running');
      return this.status;
    });
  }

  /** The screen as a PNG. */
  async screenshot(): Promise<Buffer> {
    if (!this.qemu) throw new VmError('VM_E_VM_NOT_RUNNING', `${this.config.name} is not running; there is no screen to show`);
    const file = this.paths.screenshot;
    await this.qmp().execute('screendump', { filename: file, format: 'png' });
    try {
      return fs.readFileSync(file);
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  /** Resolves once QEMU has gone (at once when it is not running). */
  async stopped(): Promise<void> {
    await this.qemu?.exited;
  }

  /**
   * Plugs adapter `index`'s cable in or pulls it out: the guest sees its link go up or down, and
   * nothing else changes. vserverd has already joined the adapter's TAP to the new bridge (or
   * taken it off its bridge).
   */
  async setLink(index: number, up: boolean): Promise<void> {
    if (!this.qemu) throw new VmError('VM_E_VM_NOT_RUNNING', `${this.config.name} is not running (it is ${this.status.state})`);
    if (!Number.isInteger(index) || index < 0 || index >= this.config.networkAdapters.length) {
      throw new VmError('VM_E_INVALID_PARAMS', `${this.config.name} has no network adapter ${index}`);
    }
    if (up && !this.tapsAtStart[index]) {
      throw new VmError('VM_E_NETWORK_FAILED', `network adapter ${index} of ${this.config.name} has no TAP: the VM was turned on without host networks; turn it off and on again`);
    }
    await this.qmp().execute('set_link', { name: `nic${index}`, up });
  }

  /** The served tops and their chains. */
  servedDisks(): ServedDisk[] {
    return this.disks.length ? servedDisks(this.slotExports()) : (this.status.disks ?? []);
  }

  /**
   * Switches every named slot, at one instant, to a new empty differencing child of its top. The
   * children are made before the guest is held; the hold covers only a flush, the switch and
   * status.json. With memory, how long the guest is held depends on the method (MEMORY_METHODS):
   * the capture of the device state, the last pass of a live save, or the whole paused save.
   */
  snapshotDisks(request: SnapshotRequest): Promise<SnapshotResult> {
    return this.exclusive('snapshot', ['Running', 'Paused'], async () => {
      const layers = this.checkSnapshotRequest(request);
      const holder = `VM "${this.config.name}" (worker pid ${process.pid})`;
      const prepared = await prepareTops(this.slotExports(), layers, holder);
      const maps = new MapHandover(prepared, request.changeMaps?.generation ?? null);
      const wasRunning = this.status.state === 'Running';
      let choice: { method: MemoryMethod; fallbackReason?: string } | null = null;
      let switched = false;
      let heldAt = 0;
      let resumedAt = 0;
      // The instant: from here the snapshot is taken, whatever follows.
      const switchNow = (): void => {
        switchTops(prepared);
        switched = true;
        maps.atInstant();
        this.recordDisks();
        crashPoint('snapshot-switched');
      };
      let memory: SnapshotResult['memory'];
      try {
        maps.beforePause();
        if (request.memory) choice = await this.chooseMemoryMethod(wasRunning);
        crashPoint('snapshot-prepared');
        if (choice?.method === 'live-save') {
          // The guest runs while its memory is copied; QEMU holds it for the last pass and waits
          // for us: the disks are switched then, so memory and disks are of one instant.
          const held = this.qmp().waitForEvent('STOP', LIVE_SAVE_MS).then(() => { heldAt = performance.now(); });
          held.catch(() => {});
          memory = await this.saveMemory(request.memory!.file, choice, {
            atSwitchover: async () => { await held; switchNow(); },
          });
        } else {
          heldAt = performance.now();
          if (wasRunning) await this.qmp().execute('stop');
          // A paused save runs before the switch: should it fail, nothing has changed yet.
          if (choice?.method === 'paused-save') memory = await this.saveMemory(request.memory!.file, choice);
          switchNow();
          if (choice?.method === 'background-snapshot') {
            // QEMU captures the device state, write-protects memory and resumes the guest itself.
            memory = await this.saveMemory(request.memory!.file, choice, { resumed: () => { resumedAt = performance.now(); } });
          }
        }
      } catch (e) {
        if (!switched) discardPrepared(prepared);
        throw e;
      } finally {
        if (choice) await this.resetMemoryMethod(choice.method);
        if (wasRunning && !resumedAt && this.qemu) {
          await this.qmp().execute('cont').catch(() => {});
          resumedAt = performance.now();
        }
      }
      if (wasRunning && this.status.state !== 'Running') this.setState('Running');
      const changeMaps = maps.finish();
      return {
        pauseMs: wasRunning ? Math.round((resumedAt - heldAt) * 100) / 100 : 0,
        previous: prepared.map((p) => ({ slot: p.slot, file: p.previous.path })),
        ...(memory ? { memory } : {}),
        ...(changeMaps ? { changeMaps } : {}),
      };
    });
  }

  /** Merges a layer of a served chain while the guest runs (see layers.ts); the worker deletes nothing. */
  mergeLayer(request: MergeRequest): Promise<MergeOutcome> {
    return this.exclusive('merge', ['Running', 'Paused'], async () => {
      const { slot, layer, direction } = request ?? {};
      const served = this.disks.find((d) => d.exportName === slot);
      if (!served) throw new VmError('VM_E_INVALID_PARAMS', `${this.config.name} serves no disk in slot "${String(slot)}" (it serves ${this.disks.map((d) => d.exportName).join(', ') || 'none'})`);
      if (typeof layer !== 'string' || !path.isAbsolute(layer)) throw new VmError('VM_E_INVALID_PARAMS', 'layer must be an absolute path of a file in the chain');
      const holder = `VM "${this.config.name}" (worker pid ${process.pid}), merging`;
      const onProgress = (done: number, total: number): void => {
        this.emit('progress', { operation: 'merge', percent: total ? Math.min(99, Math.floor((done / total) * 100)) : 99, bytes: done });
      };
      let outcome: MergeOutcome;
      if (direction === 'intoChild') {
        outcome = await mergeIntoChildOnline(served.export, slot, layer, holder, { onProgress });
      } else if (direction === 'intoParent') {
        outcome = await commitIntoParentOnline(served.export, slot, layer, holder, { onProgress, topChanged: () => this.recordDisks() });
      } else {
        throw new VmError('VM_E_INVALID_PARAMS', `direction must be "intoChild" or "intoParent", not ${JSON.stringify(direction)}`);
      }
      this.recordDisks();
      this.emit('progress', { operation: 'merge', percent: 100, bytes: outcome.bytesMerged });
      return outcome;
    });
  }

  private checkSnapshotRequest(request: SnapshotRequest): Array<{ slot: string; file: string }> {
    const layers = request?.layers;
    if (!Array.isArray(layers) || layers.length === 0) throw new VmError('VM_E_INVALID_PARAMS', 'layers must name at least one slot and its new file');
    const seen = new Set<string>();
    for (const layer of layers) {
      if (!layer || typeof layer.slot !== 'string' || !this.disks.some((d) => d.exportName === layer.slot)) {
        throw new VmError('VM_E_INVALID_PARAMS', `${this.config.name} serves no disk in slot "${String(layer?.slot)}" (it serves ${this.disks.map((d) => d.exportName).join(', ')})`);
      }
      if (seen.has(layer.slot)) throw new VmError('VM_E_INVALID_PARAMS', `slot ${layer.slot} is named twice`);
      seen.add(layer.slot);
      if (typeof layer.file !== 'string' || !path.isAbsolute(layer.file)) throw new VmError('VM_E_INVALID_PARAMS', `the new file for ${layer.slot} must be an absolute path`);
    }
    if (request.memory && (typeof request.memory.file !== 'string' || !path.isAbsolute(request.memory.file))) {
      throw new VmError('VM_E_INVALID_PARAMS', 'memory.file must be an absolute path');
    }
    if (request.memory && fs.existsSync(request.memory.file)) throw new VmError('VM_E_INVALID_PARAMS', `${request.memory.file} already exists`);
    if (request.changeMaps && typeof request.changeMaps.generation !== 'string') {
      throw new VmError('VM_E_INVALID_PARAMS', 'changeMaps.generation must be a string (the backup the new maps count from)');
    }
    return layers.map((l) => ({ slot: l.slot, file: path.resolve(l.file) }));
  }

  /**
   * The best memory method QEMU accepts now (MEMORY_METHODS), its capability turned on; with the
   * reason the better ones could not be used. A paused VM is saved as it is.
   */
  private async chooseMemoryMethod(running: boolean): Promise<{ method: MemoryMethod; fallbackReason?: string }> {
    if (!running) return { method: 'paused-save', fallbackReason: 'the VM was paused: its memory is saved while it stays paused' };
    const refused: string[] = [];
    for (const [method, capability] of [['background-snapshot', 'background-snapshot'], ['live-save', 'pause-before-switchover']] as const) {
      try {
        await this.qmp().execute('migrate-set-capabilities', { capabilities: [{ capability, state: true }] });
        return { method, ...(refused.length ? { fallbackReason: refused.join('; ') } : {}) };
      } catch (e) {
        refused.push(`${capability}: ${(e as Error).message}`);
      }
    }
    return { method: 'paused-save', fallbackReason: refused.join('; ') };
  }

  /** Turns the chosen method's capability off again, so that a plain save is plain. */
  private async resetMemoryMethod(method: MemoryMethod): Promise<void> {
    const capability = method === 'background-snapshot' ? 'background-snapshot' : method === 'live-save' ? 'pause-before-switchover' : null;
    if (!capability || !this.qemu) return;
    await this.qmp().execute('migrate-set-capabilities', { capabilities: [{ capability, state: false }] }).catch(() => {});
  }

  /**
   * The guest's memory and device state into `file` (a draft renamed at the end). `resumed` is
   * called when QEMU resumes the guest itself (a background snapshot; QEMU 7.2 sends RESUME),
   * `atSwitchover` when a live save holds the guest for its last pass.
   */
  private async saveMemory(
    file: string, choice: { method: MemoryMethod; fallbackReason?: string },
    hooks: { resumed?: () => void; atSwitchover?: () => Promise<void> } = {},
  ): Promise<NonNullable<SnapshotResult['memory']>> {
    const draft = draftOf(file);
    let resumedEvent: Promise<unknown> | null = null;
    if (hooks.resumed) {
      resumedEvent = this.qmp().waitForEvent('RESUME', BACKGROUND_START_MS).then(() => hooks.resumed?.());
      resumedEvent.catch(() => {});
    }
    try {
      await this.writeSavedState(draft, { started: async () => { if (resumedEvent) await resumedEvent; }, atSwitchover: hooks.atSwitchover });
      fs.renameSync(draft, file);
    } catch (e) {
      fs.rmSync(draft, { force: true });
      throw e instanceof VmError ? e : new VmError('VM_E_SAVE_FAILED', `saving the memory to ${file} failed: ${(e as Error).message}`);
    }
    return { file, bytes: fs.statSync(file).size, method: choice.method, ...(choice.fallbackReason ? { fallbackReason: choice.fallbackReason } : {}) };
  }

  // --- the steps -----------------------------------------------------------------------------

  private async serveDisks(): Promise<void> {
    const holder = `VM "${this.config.name}" (worker pid ${process.pid})`;
    for (const { slot, path } of hardDisks(this.config)) {
      // A merge a killed worker left between its journal and the header write is completed first.
      const served = await serveFile(path, { socket: this.paths.disk(slot), exportName: slot, holder, log: this.options.log, finishReparents: true });
      this.disks.push(served);
      const licence = this.options.licence;
      if (licence) served.export.writeGate = () => (licence.mayWrite() ? null : `the VM's run licence has ended: ${licence.fenceReason}`);
      // Stored open before QEMU can write: a worker killed from here on leaves it unsure. A map
      // that cannot be stored (a read-only folder) is not kept: the next backup is then full.
      try {
        served.export.changes = ChangeMap.openFor(served.export.disk.path, served.export.disk.size);
      } catch (e) {
        this.options.log(`no change map for ${served.export.disk.path}: ${(e as Error).message}`);
      }
    }
    this.status = { ...this.status, disks: servedDisks(this.slotExports()) };
  }

  private slotExports(): Array<{ slot: string; export: ServedFile['export'] }> {
    return this.disks.map((d) => ({ slot: d.exportName, export: d.export }));
  }

  /** The served tops and chains into the status, and status.json written, before anything goes on. */
  private recordDisks(): void {
    this.status = { ...this.status, disks: servedDisks(this.slotExports()) };
    this.emit('disks', this.status);
  }

  /** QEMU's arguments: the served disks by their NBD sockets, and -incoming when a saved state is to be streamed in. */
  private qemuCommandLine(engine: EngineProbe, incoming: boolean): string[] {
    this.tapsAtStart = this.config.networkAdapters.map((_, i) => tapOnHost(tapName(this.config.id, i)));
    const disks = new Map<string, DiskSource>(this.disks.map((d) => [d.exportName, { kind: 'nbd', socket: d.socket!, export: d.exportName }]));
    return qemuArgs({
      config: this.config, engine: engine.engine, qmpSocket: this.paths.qmp, vncSocket: this.paths.vnc,
      taps: this.tapsAtStart, disks, incoming, runAs: this.options.runAs?.name ?? null,
    });
  }

  /** Starts QEMU under the pseudo-terminal that is COM1; its exit is followed from here on. */
  private spawnQemu(engine: EngineProbe, args: string[]): Running {
    this.prepareQemuDir();
    fs.writeFileSync(this.paths.qemuLog, `# ${new Date().toISOString()} qemu-system-x86_64 ${args.join(' ')}\n`, { flag: 'a' });
    this.stopping = null;
    this.guestPoweredOff = false;
    this.savedStateWritten = false;
    // sh only redirects QEMU's own messages to the log and then becomes QEMU (exec), so the pty's
    // session leader is QEMU: when the worker dies the terminal hangs up and QEMU gets SIGHUP.
    const terminal = pty.spawn('/bin/sh', ['-c', 'exec "$0" "$@" 2>>"$VSERVER_QEMU_LOG"', 'qemu-system-x86_64', ...args], {
      name: 'vt100', cols: 80, rows: 25, cwd: this.paths.qemuDir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', VSERVER_QEMU_LOG: this.paths.qemuLog },
    });
    let exited!: () => void;
    const running: Running = { terminal, qmp: null, exited: new Promise((r) => { exited = r; }) };
    this.qemu = running;
    terminal.onData((data) => this.console.received(Buffer.from(data, 'utf8')));
    terminal.onExit(({ exitCode, signal }) => void this.qemuExited(running, exitCode, signal).finally(exited));
    this.console.attachTerminal(terminal);
    this.status = { ...this.status, engine: engine.engine, engineReason: engine.reason, qemuPid: terminal.pid };
    return running;
  }

  /** Waits for QEMU's QMP socket; a QEMU that exits first is reported with the end of its log. */
  private async connectQmp(running: Running): Promise<void> {
    try {
      running.qmp = await QmpClient.connectWhenReady(this.paths.qmp, { timeoutMs: 30_000, gone: () => this.qemu !== running });
    } catch (e) {
      const cause = this.qemu === running ? (e as Error).message : this.qemuLogTail();
      throw new VmError('VM_E_START_FAILED', `QEMU could not start: ${cause}`);
    }
    running.qmp.on('event', (e) => {
      if (e.event === 'SHUTDOWN' && e.data?.guest === true) this.guestPoweredOff = true;
    });
  }

  private async unplugDisconnectedAdapters(): Promise<void> {
    for (const [i, nic] of this.config.networkAdapters.entries()) {
      if (nic.network === null) await this.qmp().execute('set_link', { name: `nic${i}`, up: false });
    }
  }

  /**
   * QEMU connects to a socket of ours and streams its state, which goes to the file. `started`
   * runs once the migration is under way, `atSwitchover` when QEMU holds the guest before its
   * last pass (only with the pause-before-switchover capability on).
   */
  private async writeSavedState(file: string, hooks: { started?: () => Promise<void>; atSwitchover?: () => Promise<void> } = {}): Promise<void> {
    const socketPath = this.paths.migrationOut;
    fs.rmSync(socketPath, { force: true });
    let received!: Promise<void>;
    const written = { bytes: 0 };
    const server = net.createServer();
    const accepted = new Promise<void>((resolve, reject) => {
      server.once('connection', (socket) => {
        server.close();
        const out = fs.createWriteStream(file);
        socket.on('data', (chunk: Buffer) => { written.bytes += chunk.length; });
        received = new Promise((done, fail) => {
          socket.pipe(out);
          out.on('close', () => { fsyncFile(file); done(); });
          out.on('error', fail);
          socket.on('error', fail);
        });
        resolve();
      });
      server.once('error', reject);
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    this.giveToQemu(socketPath);
    try {
      // MIGRATION events let followMigration see each change at once rather than at its next poll.
      await this.qmp().execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
      await this.qmp().execute('migrate-set-parameters', { 'max-bandwidth': SAVE_BANDWIDTH, 'downtime-limit': SAVE_DOWNTIME_MS });
      await this.qmp().execute('migrate', { uri: `unix:${socketPath}` });
      await hooks.started?.();
      await this.followMigration('save', written, hooks.atSwitchover);
      await accepted;
      this.emit('progress', { operation: 'writing the state file', percent: 99 });
      await received;
    } finally {
      server.close();
      fs.rmSync(socketPath, { force: true });
    }
  }

  /** QEMU listens (it was started with -incoming defer); we connect and stream the saved state in. */
  private async restoreSavedState(): Promise<void> {
    this.setState('Restoring');
    const socketPath = this.paths.migrationIn;
    await this.qmp().execute('migrate-incoming', { uri: `unix:${socketPath}` });
    const socket = net.connect(socketPath);
    const total = fs.statSync(this.config.savedState).size;
    let sent = 0;
    let percent = -1;
    const input = fs.createReadStream(this.config.savedState);
    input.on('data', (chunk) => {
      sent += chunk.length;
      // Only a new whole percent goes to vserverd, not each chunk.
      const now = Math.floor((sent / total) * 100);
      if (now === percent) return;
      percent = now;
      this.emit('progress', { operation: 'restoring memory', percent: Math.min(99, now), bytes: sent });
    });
    const streamed = new Promise<void>((resolve, reject) => {
      input.pipe(socket);
      socket.on('finish', resolve);
      socket.on('error', reject);
      input.on('error', reject);
    });
    await streamed.catch((e: unknown) => {
      // QEMU closes the socket (and exits) when what it reads is not a state it can load.
      throw new VmError('VM_E_RESTORE_FAILED', `restore failed: QEMU stopped reading the saved state ${this.config.savedState} (${(e as Error).message}); ${this.qemuLogTail()}`);
    });
    await this.followMigration('restore');
  }

  /**
   * Follows QEMU's migration until it completes; throws when it fails. A save reports the share
   * of memory sent (total less remaining: zero pages cost QEMU almost nothing to send, so the
   * bytes transferred would stay near 0%) and the bytes written to the file. When QEMU holds
   * the guest before the last pass (pre-switchover), `atSwitchover` runs and QEMU goes on; a
   * save that has not got there within LIVE_CONVERGE_MS is told to finish in one pass.
   */
  private async followMigration(operation: 'save' | 'restore', written?: { bytes: number }, atSwitchover?: () => Promise<void>): Promise<void> {
    const qmp = this.qmp();
    let wake: (() => void) | null = null;
    const onEvent = (e: QmpEvent): void => { if (e.event === 'MIGRATION') wake?.(); };
    qmp.on('event', onEvent);
    const since = performance.now();
    let toldToFinish = false;
    try {
      for (;;) {
        const info = await qmp.execute<{ status?: string; ram?: { transferred: number; remaining: number; total: number }; 'error-desc'?: string }>('query-migrate');
        if (info.status === 'completed') break;
        if (info.status === 'failed' || info.status === 'cancelled') {
          throw new VmError(operation === 'save' ? 'VM_E_SAVE_FAILED' : 'VM_E_RESTORE_FAILED',
            `${operation} failed: ${info['error-desc'] ?? info.status}${operation === 'restore' ? `; ${this.qemuLogTail()}` : ''}`);
        }
        if (info.status === 'pre-switchover' && atSwitchover) {
          const run = atSwitchover;
          atSwitchover = undefined;
          await run();
          await qmp.execute('migrate-continue', { state: 'pre-switchover' });
          continue;
        }
        if (written && info.ram?.total) {
          const sent = info.ram.total - info.ram.remaining;
          this.emit('progress', { operation: 'saving memory', percent: Math.min(98, Math.floor((sent / info.ram.total) * 100)), bytes: written.bytes });
        }
        if (atSwitchover && !toldToFinish && performance.now() - since > LIVE_CONVERGE_MS) {
          // The guest dirties memory as fast as it is copied: the last pass takes what is left.
          this.options.log(`the live save of ${this.config.name} has not converged in ${LIVE_CONVERGE_MS} ms: finishing it in one pass with the guest held`);
          await qmp.execute('migrate-set-parameters', { 'downtime-limit': FINISH_NOW_DOWNTIME_MS });
          toldToFinish = true;
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, SAVE_POLL_MS);
          wake = () => { clearTimeout(timer); resolve(); };
        });
        wake = null;
      }
    } finally {
      qmp.off('event', onEvent);
    }
    if (written) this.emit('progress', { operation: 'saving memory', percent: 98, bytes: written.bytes });
  }

  private async qemuExited(running: Running, exitCode: number, signal?: number): Promise<void> {
    if (this.qemu === running) this.qemu = null;
    running.qmp?.close();
    this.console.attachTerminal(null);
    const reason = this.stopping ?? (this.guestPoweredOff ? 'the guest shut down' : null);
    const crashed = reason ? undefined : {
      reason: `QEMU exited unexpectedly (${signal ? signalName(signal) : `status ${exitCode}`}): ${this.qemuLogTail()}`,
      at: new Date().toISOString(),
    };
    if (crashed) this.options.log(crashed.reason);
    if (this.status.state !== 'TurningOff' && this.status.state !== 'TurningOn' && this.status.state !== 'Restoring') this.setState('TurningOff');
    await this.releaseResources();
    if (this.status.state === 'TurningOn' || this.status.state === 'Restoring') return; // abandonStart settles the state
    this.status = { ...this.status, qemuPid: undefined };
    this.setState('TurnedOff', { stopReason: reason ?? undefined, crashed });
    if (this.savedStateWritten) this.setState('Saved');
  }

  private async abandonStart(settle: VmState): Promise<void> {
    const running = this.qemu;
    if (running) {
      this.stopping = 'start failed';
      running.terminal.kill('SIGKILL');
      await running.exited;
    }
    await this.releaseResources();
    this.status = { ...this.status, qemuPid: undefined };
    this.setState(settle);
  }

  private async releaseResources(): Promise<void> {
    const disks = this.disks.splice(0);
    for (const disk of disks) {
      const top = disk.export.disk.path;
      const changes = disk.export.changes;
      if (this.status.fenced) {
        // Fenced: not a byte more to the disk (another host may own it by now); the map stays unsure.
        await disk.abandon().catch((e: Error) => this.options.log(`abandoning ${disk.file} failed: ${e.message}`));
        continue;
      }
      try {
        await disk.stop();
        // A clean close: the map is sure, for this top as it is now.
        changes?.store(top, 'closed');
      } catch (e) {
        this.options.log(`closing ${disk.file} failed: ${(e as Error).message}`);
      }
    }
  }

  // --- helpers -------------------------------------------------------------------------------

  private async exclusive<T>(operation: string, allowed: VmState[], run: () => Promise<T>): Promise<T> {
    if (this.operation) throw new VmError('VM_E_BUSY', `${this.config.name} is busy (${this.operation} in progress); try again when it has finished`);
    if (!allowed.includes(this.status.state)) {
      const code = isActive(this.status.state) ? 'VM_E_VM_RUNNING' : 'VM_E_VM_NOT_RUNNING';
      throw new VmError(code, `cannot ${operation} ${this.config.name}: it is ${this.status.state} (${operation} needs ${allowed.join(' or ')})`);
    }
    this.operation = operation;
    try {
      return await run();
    } finally {
      this.operation = null;
    }
  }

  /** The one place a state change is announced: a state reached again (a turn off that interrupts a turn on settles it twice) is not news. */
  private setState(state: VmState, extra: Partial<VmStatus> = {}): void {
    if (state === this.status.state) {
      this.status = { ...this.status, ...extra };
      return;
    }
    this.status = { ...this.status, ...extra, state, since: new Date().toISOString() };
    if (!isActive(state)) delete this.status.runningSince;
    this.emit('state', this.status);
  }

  private qmp(): QmpClient {
    const client = this.qemu?.qmp;
    if (!client) throw new VmError('VM_E_VM_NOT_RUNNING', `${this.config.name} is not running`);
    return client;
  }

  /** The run folder is root's; QEMU, after dropping privileges, writes only in its own subfolder. */
  private prepareQemuDir(): void {
    fs.mkdirSync(this.paths.qemuDir, { recursive: true, mode: 0o700 });
    const account = this.options.runAs;
    if (account) {
      fs.chmodSync(this.paths.dir, 0o711);
      const closed = unsearchableAncestor(this.paths.dir);
      if (closed) {
        throw new VmError('VM_E_START_FAILED', `QEMU runs as ${account.name} and must reach ${this.paths.qemuDir}, but ${closed} `
          + 'is closed to other users; allow it (chmod o+x) or choose another run folder (VSERVER_RUN_DIR)');
      }
      fs.chownSync(this.paths.qemuDir, account.uid, account.gid);
    }
  }

  private giveToQemu(file: string): void {
    const account = this.options.runAs;
    if (account) fs.chownSync(file, account.uid, account.gid);
  }

  private qemuLogTail(): string {
    try {
      const lines = fs.readFileSync(this.paths.qemuLog, 'utf8').trim().split('\n').filter((l) => !l.startsWith('#'));
      return lines.slice(-3).join(' | ') || 'QEMU printed nothing';
    } catch {
      return 'QEMU printed nothing';
    }
  }
}

/** The first folder above `dir` that other users cannot pass through, if any. */
function unsearchableAncestor(dir: string): string | null {
  for (let at = path.dirname(dir); ; at = path.dirname(at)) {
    if ((fs.statSync(at).mode & 0o001) === 0) return at;
    if (at === path.dirname(at)) return null;
  }
}

function signalName(signal: number): string {
  const entry = Object.entries(os.constants.signals).find(([, n]) => n === signal);
  return entry ? entry[0] : `signal ${signal}`;
}

/** The TAP device when the host has it (vserverd made it before the turn on), else null. */
function tapOnHost(name: string): string | null {
  return fs.existsSync(`/sys/class/net/${name}`) ? name : null;
}
