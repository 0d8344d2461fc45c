// The names of vserver's host parts (bridges and TAPs), made from ids so that a restarted vserverd
// finds its own parts by name, and tells them from the host's (IFNAMSIZ: 15 characters at most).

export const BRIDGE_PREFIX = 'vsbr';
export const TAP_PREFIX = 'vst';

const BRIDGE_PATTERN = new RegExp(`^${BRIDGE_PREFIX}[0-9a-f]{8}$`);
const TAP_PATTERN = new RegExp(`^${TAP_PREFIX}[0-9a-f]{8}n\\d+$`);

/** The bridge of a network: the prefix and the first 8 hex digits of its id. */
export function bridgeName(networkId: string): string {
  const hex = networkId.replace(/-/g, '').toLowerCase().slice(0, 8);
  if (!/^[0-9a-f]{8}$/.test(hex)) throw new Error(`not a network id: ${networkId}`);
  return `${BRIDGE_PREFIX}${hex}`;
}

export function isOurBridge(ifname: string): boolean {
  return BRIDGE_PATTERN.test(ifname);
}

export function isOurTap(ifname: string): boolean {
  return TAP_PATTERN.test(ifname);
}

/** Whether an interface is one of vserver's own (left out of the host's adapters). */
export function isOurs(ifname: string): boolean {
  return isOurBridge(ifname) || isOurTap(ifname);
}
