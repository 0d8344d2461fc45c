// What vserverd knows of a virtual network; shared by the repository (network-repository.ts),
// the service that keeps its host parts (virtual-networks.ts) and the API.

import type { DhcpSettings, NetworkKind } from './network/dhcp-settings.js';

export { NETWORK_KINDS, type NetworkKind } from './network/dhcp-settings.js';
export { COUNTER_NAMES, type CounterName, type Counters } from './network/counters.js';

/** The network a first start creates, as Virtual Server's installation did. */
export const FIRST_NETWORK = { name: 'Internal Network', kind: 'internal' } as const;

export interface NetworkRecord {
  id: string;
  name: string;
  kind: NetworkKind;
  /** The host interface a host-connected network is bridged to; null for the other kinds. */
  hostAdapter: string | null;
  notes: string;
  dhcp: DhcpSettings;
  /** Its .vnc file, which another host can register. */
  vncPath: string;
  created: string;
}

