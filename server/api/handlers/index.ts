// Every member's implementation, by "Interface.Member". dispatch.ts checks at load that this
// and the schema name the same members.

import { objectHandlers } from './objects.js';
import type { Handlers } from './types.js';
import { virtualMachineHandlers } from './virtual-machine.js';
import { virtualServerHandlers } from './virtual-server.js';

export const HANDLERS: Handlers = { ...virtualServerHandlers, ...virtualMachineHandlers, ...objectHandlers };
