// vserverd: the catalog, the API (HTTP and WebSocket), tasks, events and the VMs' workers.
// It listens on loopback unless configured otherwise. Stopping it (SIGTERM, SIGINT) applies each
// running VM's action on quit; a crash leaves the VMs running, and the next start reattaches.

import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { deadDrafts, draftWriter } from '../storage/drafts.js';
import { AccessControl } from './auth/access.js';
import { Users } from './auth/users.js';
import { openCatalog } from './catalog/database.js';
import { ConfigError, loadConfig, type ServerConfig } from './config.js';
import { call } from './api/dispatch.js';
import type { Services } from './api/services.js';
import { killDiskJobs } from './disk-jobs.js';
import { EventLog, SERVICE } from './event-log.js';
import { FileWorkers } from './file-workers.js';
import { createApp } from './http/app.js';
import { consoleUpgrades } from './http/console-proxy.js';
import { Sessions } from './http/sessions.js';
import { attachWebSocket } from './http/websocket.js';
import { Machines, type StateChange } from './machines.js';
import { StorageRoots } from './storage-roots.js';
import { settleFromVm } from './interrupted-tasks.js';
import { Tasks } from './tasks.js';
import { Backups } from './backups.js';
import { DiskLayers } from './disk-layers.js';
import { LayerStore } from './layer-store.js';
import { recoverLayers } from './layer-recovery.js';
import { Snapshots } from './snapshots.js';
import { VirtualNetworks } from './virtual-networks.js';
import { ClusterAgent } from './cluster/agent.js';
import { CallForwarder } from './cluster/forward.js';
import { HostSignatures } from './auth/host-signatures.js';
import { EtcdUnreachableError } from './cluster/etcd-client.js';
import { HostNameInUseError } from './cluster/membership.js';
import { isErrorName } from './error-catalogue.js';
import { ApiError } from './errors.js';
import type { VmRecord } from './vm-record.js';

const projectRoot = path.resolve(import.meta.dirname, '..', '..');
const version = (JSON.parse(fs.readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;

/** vserverd itself, when it acts on its own (auto-start). */
const SERVICE_PRINCIPAL = { user: SERVICE, userRole: 'Administrator', role: 'Administrator', tokenId: null, answerHere: true } as const;

async function main(): Promise<void> {
  const config = loadConfig(process.argv.slice(2), process.env, projectRoot);
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o750 });
  const db = openCatalog(config.dataDir);
  const users = new Users(db);
  const admin = await users.ensureAdministrator(config.adminUser, process.env.VSERVER_ADMIN_PASSWORD || undefined);
  const roots = new StorageRoots(config.storageRoots);
  const machines = new Machines(db);
  const events = new EventLog(db);
  const networks = await VirtualNetworks.open(db, config.dataDir, machines, config.hostNetworks, config.cluster?.hostName ?? os.hostname(),
    (severity, message, object) => events.log('Virtual Network', severity, message, SERVICE, object));
  const layers = new DiskLayers(new LayerStore(db), machines, (severity, message, object) => events.log('Virtual Machine', severity, message, SERVICE, object));
  const services: Services = {
    db, users, machines, networks, tasks: new Tasks(db, config.cluster?.hostName ?? null), events, access: new AccessControl(db),
    layers, snapshots: new Snapshots(layers), backups: new Backups(layers),
    roots, files: new FileWorkers(roots.roots), sessions: new Sessions(config.sessionTimeoutMinutes * 60_000),
    cluster: null, forwarder: null, hostName: os.hostname(), version, startedAt: Date.now(),
  };
  if (admin.generated) {
    console.log(`vserverd: created the administrator "${config.adminUser}" with the password ${admin.generated}`);
    console.log('vserverd: it is shown this once; change it with VirtualServer.SetUserPassword (or set VSERVER_ADMIN_PASSWORD before the first start).');
  }
  services.machines.on('state', (change) => logStateChange(services, change));
  services.machines.on('cleaned', (message, object) => services.events.log(object ? 'Virtual Machine' : 'Virtual Server', 'Information', message, SERVICE, object));
  await services.machines.repairVmcFiles();
  // Before the VMs: their TAPs and bridges carry frames again (or still) when they are reattached.
  await services.networks.start();
  const reattached = await services.machines.reattach();
  // Before any VM is turned on: what a kill left half done in the VMs' layers.
  await recoverLayers(services.layers, services.snapshots, services.backups);
  services.tasks.settleInterrupted((task) => settleFromVm(task, services.machines));
  await services.machines.cleanRunFolders();
  removeDeadDrafts(services);
  // After reattach (the VMs found running keep their owners) and before any turn on (each takes its ownership).
  const agent = await joinCluster(config, services);
  services.cluster = agent;
  const secret = config.cluster?.secret;
  if (agent) services.forwarder = new CallForwarder(agent, services.machines, secret ? new HostSignatures(secret, agent.hostName) : null);
  services.events.log('Virtual Server', 'Information', `vserverd ${version} started${reattached.length ? `; reattached to ${reattached.map((vm) => vm.name).join(', ')}` : ''}`);

  const server = http.createServer(createApp({ services, allowedOrigins: config.allowedOrigins, allowedHosts: config.allowedHosts, projectRoot, sessionTimeoutMinutes: config.sessionTimeoutMinutes, thumbnailSeconds: config.thumbnailSeconds }));
  attachWebSocket(server, services, { origins: config.allowedOrigins, hosts: config.allowedHosts }, consoleUpgrades(services));

  // Before the start line: a signal sent as soon as it is read must find the orderly stop.
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    void shutDown(services, server, signal, agent);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  await listen(server, config);
  scheduleAutoStart(services);
}

/**
 * Starts the cluster agent when the settings ask for one. etcd unreachable stops vserverd, or,
 * with "required": false (--cluster-optional), starts it as a single host with a warning.
 */
async function joinCluster(config: ServerConfig, services: Services): Promise<ClusterAgent | null> {
  if (!config.cluster) return null;
  try {
    return await ClusterAgent.start(config.cluster, {
      machines: services.machines,
      registerVm: async (vmcPath) => services.networks.adoptRegistered(await services.machines.register(vmcPath)),
      startVm: (vm) => startVm(services, vm),
      log: (severity, message, object) => services.events.log('Cluster', severity, message, SERVICE, object ?? null),
    });
  } catch (e) {
    if (e instanceof EtcdUnreachableError && !config.cluster.required) {
      const message = `${e.message}; starting as a single host (the cluster is optional: --cluster-optional)`;
      console.warn(`vserverd: warning: ${message}`);
      services.events.log('Cluster', 'Warning', message);
      return null;
    }
    if (e instanceof EtcdUnreachableError || e instanceof HostNameInUseError) throw new ConfigError(e.message);
    throw e;
  }
}

/** Turns a VM on as VirtualMachine.Startup does (the same checks and task), resolving once it runs. */
async function startVm(services: Services, vm: VmRecord): Promise<void> {
  const task = await call('VirtualMachine.Startup', { this: `VirtualMachine/${vm.id}` }, SERVICE_PRINCIPAL, services) as { $ref: string };
  const id = task.$ref.slice('Task/'.length);
  if (!(await services.tasks.wait(id, VM_START_LIMIT_MS))) throw new Error(`${vm.name} did not turn on within ${VM_START_LIMIT_MS / 1000} s`);
  const error = services.tasks.get(id)?.error;
  if (error) throw isErrorName(error.name) ? new ApiError(error.name, error.message) : new Error(error.message);
}

/** How long a turn on by the cluster (a restart, a failover) may take. */
const VM_START_LIMIT_MS = 120_000;

function listen(server: http.Server, config: ServerConfig): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (error) => reject(new ConfigError(`cannot listen on ${config.host}:${config.port}: ${error.message}`)));
    server.listen(config.port, config.host, () => {
      const { port } = server.address() as AddressInfo;
      const shown = config.host.includes(':') ? `[${config.host}]` : config.host;
      // The pid is the one to signal (SIGTERM) to stop it in order: npm start execs vserverd.
      console.log(`vserverd: listening on http://${shown}:${port}/ (pid ${process.pid}; data folder ${config.dataDir}; storage roots ${config.storageRoots.join(', ')})`);
      resolve();
    });
  });
}

function logStateChange(services: Services, { vm, state, status }: StateChange): void {
  const object = `VirtualMachine/${vm.id}`;
  if (status?.crashed && (state === 'TurnedOff' || state === 'Saved')) {
    services.events.log('Virtual Machine', 'Error', `${vm.name} stopped unexpectedly: ${status.crashed.reason}`, SERVICE, object);
  } else if (['Running', 'Paused', 'TurnedOff', 'Saved'].includes(state)) {
    services.events.log('Virtual Machine', 'Information', `${vm.name} is ${state}${status?.stopReason && state === 'TurnedOff' ? ` (${status.stopReason})` : ''}`, SERVICE, object);
  }
}

/** Unfinished files (new disks, converted copies, saved states) whose writer died, under the storage roots. */
function removeDeadDrafts(services: Services): void {
  for (const draft of deadDrafts(services.roots.roots)) {
    try {
      fs.rmSync(draft);
      services.events.log('Virtual Disk', 'Information', `removed ${draft}, an unfinished file whose writer (pid ${draftWriter(draft)}) is gone`);
    } catch (e) {
      services.events.log('Virtual Disk', 'Warning', `could not remove ${draft}, an unfinished file whose writer is gone: ${(e as Error).message}`);
    }
  }
}

/** Turns on the VMs whose auto-start setting asks for it, each after its delay. */
function scheduleAutoStart(services: Services): void {
  for (const vm of services.machines.autoStartList()) {
    services.machines.autoStartPending.add(vm.id);
    setTimeout(() => {
      services.machines.autoStartPending.delete(vm.id);
      services.machines.clearRunningAtQuit(vm.id);
      call('VirtualMachine.Startup', { this: `VirtualMachine/${vm.id}` }, SERVICE_PRINCIPAL, services).catch((e: Error) => {
        services.events.log('Virtual Machine', 'Error', `auto-start of ${vm.name} failed: ${e.message}`, SERVICE, `VirtualMachine/${vm.id}`);
      });
    }, vm.autoStartDelay * 1000).unref();
  }
}

async function shutDown(services: Services, server: http.Server, signal: string, agent: ClusterAgent | null): Promise<void> {
  console.log(`vserverd: ${signal}: applying each running VM's action on quit`);
  server.close();
  server.closeAllConnections();
  await services.machines.applyActionsOnQuit((vm, action, error) => {
    if (error) services.events.log('Virtual Machine', 'Error', `${vm.name}: action on quit (${action}) failed: ${error.message}`, SERVICE, `VirtualMachine/${vm.id}`);
    else services.events.log('Virtual Machine', 'Information', `${vm.name}: action on quit applied (${action})`, SERVICE, `VirtualMachine/${vm.id}`);
    console.log(`vserverd: ${vm.name}: ${action}${error ? ` failed: ${error.message}` : ' done'}`);
  });
  // Leaves the cluster; the VMs left running keep their ownership (their workers renew it).
  await agent?.stop().catch((e: Error) => console.error(`vserverd: leaving the cluster: ${e.message}`));
  services.machines.detach();
  // The networks' host parts stay: guests left running keep their networks.
  services.networks.close();
  services.events.log('Virtual Server', 'Information', `vserverd stopped (${signal})`);
  services.db.close();
  services.files.close();
  // After the catalog closed: their tasks stay unfinished there, and the next start settles them.
  killDiskJobs();
  process.exit(0);
}

main().catch((error: unknown) => {
  console.error(`vserverd: ${(error as Error).message}`);
  process.exit(error instanceof ConfigError ? 2 : 1);
});
