// Virtual Networks, as Virtual Server's site had them: Create, Add (a .vnc), Configure (View All,
// and one network's page: its settings, adapters to connect, its DHCP server with the leases, the
// adapters connected and its counters drawn as charts), and Remove, refused while adapters are
// connected. Every change is made by API calls as the signed-in user; a refusal shows the page
// again with the API's message beside the field it concerns, and changes nothing.

import type { Response, Router } from 'express';
import { ApiError, toApiError } from '../errors.js';
import { type Field, InputError, fieldOf, parseInput } from '../api/fields.js';
import { SERVER_REF } from '../api/objects.js';
import { type FieldErrors, type SiteContext, type SiteRequest, api, can, errorName, refuseFor, refusalStatus, refusePage } from './context.js';
import { type Form, Refusal, answerDone, beside, problem, refuseForm, text } from './forms.js';
import { type Series, chartLegend, historyChart } from './history-chart.js';

interface Ref { $ref: string }
interface HostInterface { name: string; mac: string; up: boolean; addresses: string[] }

const PREFIX = 'VirtualNetwork/';
const refOf = (id: string): string => `${PREFIX}${id}`;
const idOf = (ref: string): string => ref.slice(ref.indexOf('/') + 1);
/** A reference as the API may give it: {"$ref"} or the text. */
const refText = (value: unknown): string => (typeof value === 'object' && value !== null && '$ref' in value ? String((value as Ref).$ref) : String(value));

// --- The fields, as the members they are posted to declare them ------------------------------

const CREATE = 'VirtualServer.CreateVirtualNetwork';
const CONFIGURE = 'DHCPVirtualNetworkServer.ConfigureDHCPServer';
const LEASE_TIMES = 'DHCPVirtualNetworkServer.ConfigureDHCPLeaseTimes';

/** A DHCP form field: the API parameter it is posted as, the getter that reads it, and the names a refusal may give it. */
interface DhcpField { form: string; label: string; method: string; param: string; getter: string; setting: string; hint: string }

const DHCP_FIELDS: DhcpField[] = [
  { form: 'dhcp-network', label: 'Network address', method: CONFIGURE, param: 'network', getter: 'get_NetworkAddress', setting: 'networkAddress', hint: 'The network\'s address, without host bits (10.237.0.0).' },
  { form: 'dhcp-mask', label: 'Network mask', method: CONFIGURE, param: 'networkMask', getter: 'get_NetworkMask', setting: 'networkMask', hint: 'A contiguous mask (255.255.255.0).' },
  { form: 'dhcp-start', label: 'Starting IP address', method: CONFIGURE, param: 'startingIPAddress', getter: 'get_StartingIPAddress', setting: 'startingAddress', hint: 'The first address leased, inside the network.' },
  { form: 'dhcp-end', label: 'Ending IP address', method: CONFIGURE, param: 'endingIPAddress', getter: 'get_EndingIPAddress', setting: 'endingAddress', hint: 'The last address leased, not below the first.' },
  { form: 'dhcp-server', label: 'DHCP server address', method: CONFIGURE, param: 'serverIPAddress', getter: 'get_ServerIPAddress', setting: 'serverAddress', hint: 'The host\'s address on the network, inside it and outside the leased range.' },
  { form: 'dhcp-gateway', label: 'Default gateway', method: CONFIGURE, param: 'defaultGateway', getter: 'get_DefaultGatewayAddress', setting: 'defaultGateway', hint: 'Offered to the guests; empty for none.' },
  { form: 'dhcp-dns', label: 'DNS servers', method: CONFIGURE, param: 'dnsServers', getter: 'get_DNSServers', setting: 'dnsServers', hint: 'Addresses separated by commas; empty for none.' },
  { form: 'dhcp-wins', label: 'WINS servers', method: CONFIGURE, param: 'winsServers', getter: 'get_WINSServers', setting: 'winsServers', hint: 'Addresses separated by commas; empty for none.' },
  { form: 'dhcp-lease', label: 'Lease time (seconds)', method: LEASE_TIMES, param: 'leaseTime', getter: 'get_LeaseTime', setting: 'leaseTime', hint: 'How long a lease lasts.' },
  { form: 'dhcp-renewal', label: 'Renewal time (seconds)', method: LEASE_TIMES, param: 'renewalTime', getter: 'get_RenewalTime', setting: 'renewalTime', hint: 'When a guest asks to renew (T1); below the rebinding time.' },
  { form: 'dhcp-rebinding', label: 'Rebinding time (seconds)', method: LEASE_TIMES, param: 'rebindingTime', getter: 'get_RebindingTime', setting: 'rebindingTime', hint: 'When a guest asks any server (T2); below the lease time.' },
];

/** What the pages show of the declarations: limits and choices. */
export const NETWORK_FIELDS = {
  name: fieldOf('VirtualNetwork.put_Name', 'value'),
  notes: fieldOf('VirtualNetwork.put_Notes', 'value'),
  kinds: fieldOf(CREATE, 'kind').choices ?? [],
  dhcp: DHCP_FIELDS.map((f) => ({ ...f, field: fieldOf(f.method, f.param) })),
};

/** The kinds in words, as the pages offer them. */
const KIND_LABELS: Record<string, string> = {
  internal: 'Internal: the guests only (Virtual Server\'s "None (Guest Only)")',
  host: 'Host: bridged to an interface of this host',
  nat: 'NAT: the host is the guests\' gateway, and masquerades their traffic',
};

/** The form's field a refusal's field (a DHCP setting or an API parameter) belongs beside. */
const REFUSED_FIELD: Record<string, string> = Object.fromEntries(DHCP_FIELDS.flatMap((f) => [[f.param, f.form], [f.setting, f.form]]));

/** A typed value read as the declaration says, refused beside its form field. */
function declared(field: Field, form: Form, name: string, label: string): unknown {
  const value = text(form[name]);
  try {
    return parseInput(label, value, field.type);
  } catch (e) {
    if (e instanceof InputError) throw problem(name, e.message);
    throw e;
  }
}

// --- Reading a network -------------------------------------------------------------------------

interface AdapterView { ref: string; vmId: string; vmName: string; index: number; mac: string }

export interface NetworkView {
  id: string; ref: string; name: string; kind: string; hostAdapter: string | null; notes: string; file: string; dhcpRef: string;
  dhcp: Record<string, unknown> & { enabled: boolean };
  adapters: AdapterView[];
  counters: { label: string; value: number }[];
}

const COUNTERS = [['Bytes sent', 'BytesSent'], ['Bytes received', 'BytesReceived'], ['Bytes dropped', 'BytesDropped'],
  ['Packets sent', 'PacketsSent'], ['Packets received', 'PacketsReceived'], ['Packets dropped', 'PacketsDropped']] as const;

/** An adapter reference as the VM's name and the adapter's number; one the caller cannot read shows its reference. */
async function adapterView(ctx: SiteContext, req: SiteRequest, ref: string): Promise<AdapterView> {
  const [, vmId = '', index = '-1'] = /^NetworkAdapter\/([^/]+)\/(\d+)$/.exec(ref) ?? [];
  const vmName = await api<string>(ctx, req, 'VirtualMachine.get_Name', { this: `VirtualMachine/${vmId}` }).catch(() => ref);
  const mac = await api<string>(ctx, req, 'NetworkAdapter.get_EthernetAddress', { this: ref }).catch(() => '');
  return { ref, vmId, vmName, index: Number(index), mac };
}

async function readNetwork(ctx: SiteContext, req: SiteRequest, id: string): Promise<NetworkView> {
  const ref = refOf(id);
  const get = <T>(member: string): Promise<T> => api<T>(ctx, req, `VirtualNetwork.${member}`, { this: ref });
  const dhcpRef = refText(await get<Ref>('get_DHCPVirtualNetworkServer'));
  const dhcpValues = await Promise.all(DHCP_FIELDS.map((f) => api(ctx, req, `DHCPVirtualNetworkServer.${f.getter}`, { this: dhcpRef })));
  const adapters = await get<unknown[]>('get_NetworkAdapters');
  return {
    id, ref, name: await get<string>('get_Name'), kind: await get<string>('get_Kind'), hostAdapter: await get<string | null>('get_HostAdapter'),
    notes: await get<string>('get_Notes'), file: await get<string>('get_File'), dhcpRef,
    dhcp: { enabled: await api<boolean>(ctx, req, 'DHCPVirtualNetworkServer.get_IsEnabled', { this: dhcpRef }), ...Object.fromEntries(DHCP_FIELDS.map((f, i) => [f.form, dhcpValues[i]])) },
    adapters: await Promise.all(adapters.map((a) => adapterView(ctx, req, refText(a)))),
    counters: await Promise.all(COUNTERS.map(async ([label, member]) => ({ label, value: await get<number>(`get_${member}`) }))),
  };
}

/** A value of the DHCP settings as its form field shows it. */
function shown(value: unknown): string {
  if (Array.isArray(value)) return value.join(', ');
  return value === null || value === undefined ? '' : String(value);
}

/** The counters' histories as two charts, bytes and packets. */
async function charts(ctx: SiteContext, req: SiteRequest, ref: string): Promise<string[]> {
  const history = async (member: string, label: string): Promise<Series> => ({ label, samples: await api<Series['samples']>(ctx, req, `VirtualNetwork.get_${member}History`, { this: ref }) });
  const bytes = await Promise.all([history('BytesSent', 'Sent'), history('BytesReceived', 'Received'), history('BytesDropped', 'Dropped')]);
  const packets = await Promise.all([history('PacketsSent', 'Sent'), history('PacketsReceived', 'Received'), history('PacketsDropped', 'Dropped')]);
  return [
    `${historyChart('Bytes per 5 seconds', 'bytes', bytes)}${chartLegend(bytes, 'bytes')}`,
    `${historyChart('Packets per 5 seconds', 'packets', packets)}${chartLegend(packets, 'packets')}`,
  ];
}

async function hostInterfaces(ctx: SiteContext, req: SiteRequest): Promise<HostInterface[]> {
  const host = await api<{ networkInterfaces?: HostInterface[] }>(ctx, req, 'VirtualServer.get_HostInfo');
  return host.networkInterfaces ?? [];
}

/** The networks the caller may see, by name: for the list and the VMs' network pickers. */
export async function networkChoices(ctx: SiteContext, req: SiteRequest): Promise<{ id: string; name: string }[]> {
  const refs = await api<unknown[]>(ctx, req, 'VirtualServer.get_VirtualNetworks');
  const rows = await Promise.all(refs.map(async (r) => {
    const ref = refText(r);
    return { id: idOf(ref), name: await api<string>(ctx, req, 'VirtualNetwork.get_Name', { this: ref }) };
  }));
  return rows.sort((a, b) => a.name.localeCompare(b.name));
}

// --- Pages -------------------------------------------------------------------------------------

export interface NetworkPageOptions { status?: number; errors?: FieldErrors; form?: Form; saved?: string; failed?: string }

/** What the "saved" notice says after each form of the page. */
const SAVED: Record<string, string> = {
  general: 'The network\'s settings were saved.',
  dhcp: 'The DHCP server\'s settings were saved.',
  attach: 'The adapter was connected.',
  detach: 'The adapter was disconnected.',
};

async function renderNetwork(ctx: SiteContext, req: SiteRequest, res: Response, id: string, options: NetworkPageOptions = {}): Promise<void> {
  let network: NetworkView;
  try {
    network = await readNetwork(ctx, req, id);
  } catch (error) {
    return refuseFor(req, res, error);
  }
  const canChange = can(ctx, req, 'change', SERVER_REF);
  const unconnected = canChange ? await api<unknown[]>(ctx, req, 'VirtualServer.get_UnconnectedNetworkAdapters') : [];
  res.status(options.status ?? 200).render('networks/configure', {
    title: `Configure ${network.name}`, network, errors: options.errors ?? {}, form: options.form ?? {}, failed: options.failed ?? null,
    saved: options.saved && Object.hasOwn(SAVED, options.saved) ? SAVED[options.saved] : null,
    unconnected: await Promise.all(unconnected.map((a) => adapterView(ctx, req, refText(a)))),
    leases: await api<unknown[]>(ctx, req, 'DHCPVirtualNetworkServer.get_Leases', { this: network.dhcpRef }),
    interfaces: network.kind === 'host' ? await hostInterfaces(ctx, req) : [],
    charts: await charts(ctx, req, network.ref),
    canChange, canDelete: can(ctx, req, 'delete', SERVER_REF), fields: NETWORK_FIELDS, shown, kindLabels: KIND_LABELS,
  });
}

async function renderCreate(ctx: SiteContext, req: SiteRequest, res: Response, form: Form, errors: FieldErrors, status = 200): Promise<void> {
  res.status(status).render('networks/create', { title: 'Create Virtual Network', form, errors, interfaces: await hostInterfaces(ctx, req), fields: NETWORK_FIELDS, kindLabels: KIND_LABELS });
}

async function renderRemove(ctx: SiteContext, req: SiteRequest, res: Response, id: string, status = 200, errors: FieldErrors = {}, inUse: AdapterView[] = []): Promise<void> {
  let network: NetworkView;
  try {
    network = await readNetwork(ctx, req, id);
  } catch (error) {
    return refuseFor(req, res, error);
  }
  res.status(status).render('networks/remove', { title: `Remove ${network.name}`, network, errors, inUse, canDelete: can(ctx, req, 'delete', SERVER_REF) });
}

// --- Changes -----------------------------------------------------------------------------------

/**
 * A refusal as messages by form field: each problem of a refused DHCP setting (or the parameter
 * the API names) beside its field, else beside the field the step concerns; and the whole
 * message with the error's name at the top of the form ("_form").
 */
function refusalErrors(error: unknown): FieldErrors {
  const reason = error instanceof Refusal ? error.reason : error;
  const at = error instanceof Refusal ? error.field : undefined;
  const e = toApiError(reason);
  const errors: FieldErrors = {};
  const add = (key: string | undefined, message: string): void => {
    if (key) errors[key] = errors[key] ? `${errors[key]}; ${message}` : message;
  };
  const problems = e.details.problems as { field: string; message: string }[] | undefined;
  if (problems?.length) {
    for (const p of problems) add(REFUSED_FIELD[p.field] ?? at, p.message);
  } else {
    add((typeof e.details.param === 'string' ? REFUSED_FIELD[e.details.param] : undefined) ?? at, e.message);
  }
  errors._form = `${e.message} [${e.errorName}]`;
  return errors;
}

/** The DHCP form: the address settings, the lease times, then on or off. A refusal of a later step puts the earlier one back, so a refused form changes nothing. */
async function applyDhcp(ctx: SiteContext, req: SiteRequest, network: NetworkView, form: Form): Promise<void> {
  const call = (method: string, params: Record<string, unknown>): Promise<unknown> => api(ctx, req, method, { this: network.dhcpRef, ...params });
  const values = (method: string, source: (f: (typeof NETWORK_FIELDS.dhcp)[number]) => unknown): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const f of NETWORK_FIELDS.dhcp.filter((d) => d.method === method)) {
      // An empty gateway is none (null); left out, a NAT network's would be the server address.
      out[f.param] = source(f) ?? null;
    }
    return out;
  };
  const wanted = (f: (typeof NETWORK_FIELDS.dhcp)[number]): unknown => (f.param === 'defaultGateway' && text(form[f.form]) === '' ? null : declared(f.field, form, f.form, f.label));
  const addresses = values(CONFIGURE, wanted);
  const times = values(LEASE_TIMES, wanted);
  const before = { addresses: values(CONFIGURE, (f) => network.dhcp[f.form]), times: values(LEASE_TIMES, (f) => network.dhcp[f.form]) };
  const same = (a: Record<string, unknown>, b: Record<string, unknown>): boolean => JSON.stringify(a) === JSON.stringify(b);
  const changedAddresses = !same(addresses, before.addresses);
  if (changedAddresses) await beside('dhcp-network', call(CONFIGURE, addresses));
  try {
    if (!same(times, before.times)) await beside('dhcp-lease', call(LEASE_TIMES, times));
    const enabled = form['dhcp-enabled'] === 'on';
    if (enabled !== network.dhcp.enabled) await beside('dhcp-enabled', call('DHCPVirtualNetworkServer.put_IsEnabled', { value: enabled }));
  } catch (error) {
    if (changedAddresses) await call(CONFIGURE, before.addresses).catch(() => undefined);
    throw error;
  }
}

interface NetworkChange {
  /** The form's name: its refusal's messages start with "<name>-". */
  section: string;
  apply(ctx: SiteContext, req: SiteRequest, network: NetworkView, form: Form): Promise<void>;
}

const CHANGES: Record<string, NetworkChange> = {
  general: {
    section: 'general',
    async apply(ctx, req, network, form) {
      const call = (member: string, value: unknown, field: string): Promise<unknown> => beside(field, api(ctx, req, `VirtualNetwork.${member}`, { this: network.ref, value }));
      const name = text(form['general-name']);
      if (!name) throw problem('general-name', 'a virtual network needs a name');
      if (name !== network.name) await call('put_Name', name, 'general-name');
      if (network.kind === 'host' && typeof form['general-host-adapter'] === 'string') {
        const adapter = text(form['general-host-adapter']);
        if (!adapter) throw problem('general-host-adapter', 'a host network is bridged to an interface of this host: choose one');
        if (adapter !== network.hostAdapter) await call('put_HostAdapter', adapter, 'general-host-adapter');
      }
      if (typeof form['general-notes'] === 'string' && form['general-notes'] !== network.notes) await call('put_Notes', form['general-notes'], 'general-notes');
    },
  },
  dhcp: { section: 'dhcp', apply: (ctx, req, network, form) => applyDhcp(ctx, req, network, form) },
  attach: {
    section: 'attach',
    async apply(ctx, req, network, form) {
      const adapter = text(form['attach-adapter']);
      if (!adapter) throw problem('attach-adapter', 'choose the adapter to connect');
      await beside('attach-adapter', api(ctx, req, 'NetworkAdapter.AttachToVirtualNetwork', { this: adapter, network: network.ref }));
    },
  },
  detach: {
    section: 'attach',
    async apply(ctx, req, _network, form) {
      const adapter = text(form.adapter);
      if (!adapter) throw problem('attach-adapter', 'the form names no adapter');
      await beside('attach-adapter', api(ctx, req, 'NetworkAdapter.DetachFromVirtualNetwork', { this: adapter }));
    },
  },
};

/** Answers a refused form: a missing right or network with the refusal page, else the page again with the messages. */
function answerRefusal(req: SiteRequest, res: Response, error: unknown, render: (status: number, errors: FieldErrors) => Promise<void> | void): Promise<void> | void {
  const status = error instanceof Refusal ? refusalStatus(error.reason, 'form') : refusalStatus(error);
  const errors = refusalErrors(error);
  if (status === 403 || (status === 404 && !(error instanceof Refusal))) return refusePage(req, res, status, toApiError(error instanceof Refusal ? error.reason : error).message);
  return refuseForm(req, res, status, errors, () => render(status, errors));
}

function mayCreate(ctx: SiteContext, req: SiteRequest, res: Response, what: string): boolean {
  if (can(ctx, req, 'change', SERVER_REF)) return true;
  refusePage(req, res, 403, `${what} needs the change right on the server, which ${String(res.locals.user)} (${String(res.locals.role)}) does not have`);
  return false;
}

// --- Routes ------------------------------------------------------------------------------------

export function networkRoutes(router: Router, ctx: SiteContext): void {
  router.get('/networks', async (req: SiteRequest, res: Response) => {
    try {
      const refs = await api<unknown[]>(ctx, req, 'VirtualServer.get_VirtualNetworks');
      const rows = await Promise.all(refs.map((r) => readNetwork(ctx, req, idOf(refText(r)))));
      rows.sort((a, b) => a.name.localeCompare(b.name));
      res.render('networks/list', { title: 'Virtual Networks', rows, canCreate: can(ctx, req, 'change', SERVER_REF) });
    } catch (error) {
      refuseFor(req, res, error);
    }
  });

  router.get('/networks/create', async (req: SiteRequest, res: Response) => {
    if (!mayCreate(ctx, req, res, 'Creating a virtual network')) return;
    await renderCreate(ctx, req, res, { kind: 'internal' }, {});
  });

  router.post('/networks/create', async (req: SiteRequest, res: Response) => {
    const form = req.body as Form;
    try {
      const name = text(form.name);
      if (!name) throw problem('name', 'a virtual network needs a name');
      const kind = declared(fieldOf(CREATE, 'kind'), form, 'kind', 'The kind');
      const hostAdapter = text(form['host-adapter']);
      if (kind === 'host' && !hostAdapter) throw problem('host-adapter', 'a host network is bridged to an interface of this host: choose one');
      const params = { name, kind, ...(kind === 'host' ? { hostAdapter } : {}) };
      const network = refText(await beside((e) => (e.errorName === 'VM_E_HOST_ADAPTER_UNKNOWN' ? 'host-adapter' : 'name'), api<Ref>(ctx, req, CREATE, params)));
      const notes = typeof form.notes === 'string' ? form.notes : '';
      if (notes) {
        await beside('notes', api(ctx, req, 'VirtualNetwork.put_Notes', { this: network, value: notes })).catch(async (error: unknown) => {
          // A network whose notes were refused is removed again: the form made nothing.
          await api(ctx, req, 'VirtualServer.DeleteVirtualNetwork', { network }).catch(() => undefined);
          throw error;
        });
      }
      answerDone(req, res, `/networks/${idOf(network)}`);
    } catch (error) {
      await answerRefusal(req, res, error, async (status, errors) => renderCreate(ctx, req, res, form, errors, status));
    }
  });

  router.get('/networks/add', (req: SiteRequest, res: Response) => {
    if (!mayCreate(ctx, req, res, 'Adding a virtual network')) return;
    res.render('networks/add', { title: 'Add Virtual Network', errors: {}, form: {} });
  });

  router.post('/networks/add', async (req: SiteRequest, res: Response) => {
    const form = req.body as Form;
    try {
      const file = text(form.path);
      if (!file) throw problem('path', 'choose the .vnc file of the virtual network');
      const network = refText(await beside('path', api<Ref>(ctx, req, 'VirtualServer.RegisterVirtualNetwork', { path: file })));
      answerDone(req, res, `/networks/${idOf(network)}`);
    } catch (error) {
      await answerRefusal(req, res, error, (status, errors) => res.status(status).render('networks/add', { title: 'Add Virtual Network', errors, form }));
    }
  });

  router.get('/networks/:id', async (req: SiteRequest, res: Response) => {
    const saved = typeof req.query.saved === 'string' ? req.query.saved : undefined;
    await renderNetwork(ctx, req, res, String(req.params.id), { saved });
  });

  for (const [action, change] of Object.entries(CHANGES)) {
    router.post(`/networks/:id/${action}`, async (req: SiteRequest, res: Response) => {
      const id = String(req.params.id);
      const form = req.body as Form;
      try {
        const network = await readNetwork(ctx, req, id);
        await change.apply(ctx, req, network, form);
        answerDone(req, res, `/networks/${id}?saved=${action}#section-${change.section}`);
      } catch (error) {
        await answerRefusal(req, res, error, (status, errors) => renderNetwork(ctx, req, res, id, { status, errors, form, failed: change.section }));
      }
    });
  }

  router.get('/networks/:id/remove', (req: SiteRequest, res: Response) => renderRemove(ctx, req, res, String(req.params.id)));

  router.post('/networks/:id/remove', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const form = req.body as Form;
    const how = text(form.how);
    try {
      if (how !== 'unregister' && how !== 'delete') throw problem('how', 'choose to keep the .vnc or to delete it');
      await api(ctx, req, how === 'delete' ? 'VirtualServer.DeleteVirtualNetwork' : 'VirtualServer.UnregisterVirtualNetwork', { network: refOf(id) });
      answerDone(req, res, '/networks');
    } catch (error) {
      const reason = error instanceof Refusal ? error.reason : error;
      const e = toApiError(reason);
      const inUse = errorName(reason) === 'VM_E_NETWORK_IN_USE' && Array.isArray(e.details.adapters)
        ? await Promise.all(e.details.adapters.map((a) => adapterView(ctx, req, refText(a)))) : [];
      const status = refusalStatus(reason, 'form');
      if (status === 403 || status === 404) return refusePage(req, res, status, e.message);
      const errors = { how: `${e.message} [${e.errorName}]` };
      await refuseForm(req, res, status, errors, () => renderRemove(ctx, req, res, id, status, errors, inUse));
    }
  });
}

/** An adapter's network as chosen in a VM's picker: a network's id, or "" for none. */
export function pickedNetwork(form: Form, field: string): string | null {
  const value = text(form[field]);
  if (value && !/^[0-9a-f-]{36}$/i.test(value)) throw new Refusal(field, new ApiError('VM_E_INVALID_PARAMS', `"${value}" is not a network's id`));
  return value ? refOf(value) : null;
}
