// NetworkAdapter (IVMNetworkAdapter), declared member by member with its handlers: the adapter's
// model, its MAC address (dynamic, vserver's to choose, or static), the virtual network it is
// attached to (which may change while the VM runs) and its traffic counters. Its rights are the VM's.

import { isVirtualServerMac, normalizeMac, randomMac } from '../../../vmm/config.js';
import { NIC_MODELS } from '../../../vmm/profile.js';
import { ApiError } from '../../errors.js';
import { COUNTER_NAMES } from '../../network-record.js';
import { ref } from '../../references.js';
import { boolean, type Call, type InterfaceRecord, integer, type MemberRecord, membersOf, nothing, oneOf, orNull, param, refOf, string } from '../member-types.js';
import { NETWORK_EXAMPLE, VM_ID_EXAMPLE } from './shared.js';
import { counterDoc } from './virtual-network.js';

const nic = membersOf<'NetworkAdapter'>(`NetworkAdapter/${VM_ID_EXAMPLE}/0`);
type NicCall = Call<'NetworkAdapter', unknown>;
const MAC_ERRORS = ['VM_E_MAC_INVALID', 'VM_E_MAC_IN_USE', 'VM_E_VM_RUNNING', 'VM_E_VM_SAVED', 'VM_E_CONFIG_INVALID'] as const;
const ATTACH_ERRORS = ['VM_E_NETWORK_UNKNOWN', 'VM_E_NETWORK_NOT_PERMITTED', 'VM_E_NETWORK_FAILED', 'VM_E_BUSY'] as const;

/** Gives the adapter `mac`, refused while the VM is not off and when another VM of this host holds it. */
async function setMac({ services, self }: NicCall, mac: string, dynamicMac: boolean): Promise<void> {
  const holder = services.networks.macHolder(mac, self.vm.id);
  if (holder) throw new ApiError('VM_E_MAC_IN_USE', `${mac} is held by the VM ${holder.name}`);
  await services.machines.reconfigure(self.vm.id, (doc) => {
    doc.networkAdapters[self.index] = { ...doc.networkAdapters[self.index], mac, dynamicMac };
  });
}

function adapterCounters(): Record<string, MemberRecord> {
  return Object.fromEntries(COUNTER_NAMES.map((name) => [`get_${name}`,
    nic.get(`${counterDoc(name, 'its guest')}, read from its TAP (since the TAP was made); 0 while it has none.`, integer, 4096,
      ({ services, self }) => services.networks.adapterCounters(self.vm, self.index)[name])]));
}

export const networkAdapter: InterfaceRecord = {
  doc: 'A network adapter of a VM (IVMNetworkAdapter). Its TAP on the host joins it to its virtual network\'s bridge.',
  ref: 'NetworkAdapter/<vm id>/<index>',
  members: {
    get_Model: nic.get(`${NIC_MODELS.join(', ')}.`, oneOf(NIC_MODELS), 'tulip', ({ self }) => self.vm.config.networkAdapters[self.index].model),
    get_EthernetAddress: nic.get('Its MAC address, under 00:03:FF.', string, '00:03:FF:1A:2B:3C', ({ self }) => normalizeMac(self.vm.config.networkAdapters[self.index].mac)),
    put_EthernetAddress: nic.put('Gives it a static MAC address under 00:03:FF (Virtual Server\'s range), unique among this host\'s VMs; only while the VM is off.', string, '00:03:FF:0A:0B:0C',
      async (call) => {
        if (!isVirtualServerMac(call.params.value)) throw new ApiError('VM_E_MAC_INVALID', `"${call.params.value}" is not a MAC address under 00:03:FF (00:03:FF:xx:xx:xx)`);
        await setMac(call, normalizeMac(call.params.value), false);
      }, MAC_ERRORS),
    get_IsEthernetAddressDynamic: nic.get('Whether vserver chose its MAC address (true) or it was set (false).', boolean, true, ({ self }) => self.vm.config.networkAdapters[self.index].dynamicMac),
    put_IsEthernetAddressDynamic: nic.put('true: vserver gives it a new MAC address, unique among this host\'s VMs; false: its address is kept as a static one. Only while the VM is off.', boolean, true,
      async (call) => {
        const current = call.self.vm.config.networkAdapters[call.self.index];
        if (call.params.value === current.dynamicMac) return;
        await setMac(call, call.params.value ? randomMac(call.services.networks.macsInUse()) : current.mac, call.params.value);
      }, MAC_ERRORS),
    get_VirtualNetwork: nic.get('The virtual network it is attached to, or null (its cable is unplugged).', orNull(refOf('VirtualNetwork')), { $ref: NETWORK_EXAMPLE },
      ({ self }) => {
        const id = self.vm.config.networkAdapters[self.index].network;
        return id === null ? null : ref('VirtualNetwork', id);
      }),
    get_VirtualNetworkName: nic.get('The name of its network, by which every host of a cluster knows it: a VM that moves is attached to its new host\'s network of that name. With no network (get_VirtualNetwork null), the network it awaits: its last host\'s, which this host lacks, connected at a turn on where one of that name exists; null: detached.', orNull(string), 'Internal Network',
      ({ self }) => self.vm.config.networkAdapters[self.index].networkName),
    AttachToVirtualNetwork: nic.method('Attaches it to a virtual network, also while the VM runs: the guest sees its link come up (or go down and up), nothing else changes.', {
      params: { network: param(refOf('VirtualNetwork'), 'The network.') }, returns: nothing, right: 'change', errors: ATTACH_ERRORS,
      example: { params: { network: NETWORK_EXAMPLE }, result: null },
      handler: async ({ services, self, params }) => { await services.networks.attach(self.vm, self.index, params.network.id); },
    }),
    DetachFromVirtualNetwork: nic.method('Unplugs its cable, also while the VM runs: the guest sees its link go down.', {
      returns: nothing, right: 'change', errors: ATTACH_ERRORS, example: { params: {}, result: null },
      handler: async ({ services, self }) => { await services.networks.attach(self.vm, self.index, null); },
    }),
    ...adapterCounters(),
  },
};
