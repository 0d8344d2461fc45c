// Security (IVMSecurity), the access entries of the server or a VM, declared member by member with its handler.

import { RIGHTS, ROLES } from '../../auth/rights.js';
import { ApiError } from '../../errors.js';
import { field, type InterfaceRecord, listOf, membersOf, nothing, object, oneOf, param, string } from '../member-types.js';
import { guardOf } from '../../references.js';
import { VM_EXAMPLE } from './shared.js';

const { get, method } = membersOf<'Security'>(`Security/${VM_EXAMPLE}`);
const entryType = oneOf(['Allowed', 'Denied']);

export const security: InterfaceRecord = {
  doc: 'The access entries of an object (IVMSecurity): for a user or a role, Allowed or Denied, with rights read, change, control, delete, changePermissions. Entries add to the rights of the user\'s role; Denied wins over Allowed. Administrators keep every right.',
  ref: 'Security/<object reference>',
  members: {
    get_AccessRights: get('The entries.',
      listOf(object({ name: field(string, 'A user name or "role:<Role>"'), type: field(entryType, 'Allowed or Denied'), rights: field(listOf(oneOf(RIGHTS)), 'The rights') })),
      [{ name: 'ops', type: 'Allowed', rights: ['read', 'control'] }], ({ services, self }) => services.access.entries(self.object)),
    get_CurrentUserAccessRights: get('The rights the caller has on the object.', listOf(oneOf(RIGHTS)), ['read', 'control'],
      ({ services, principal, self }) => [...services.access.rightsOn(principal, guardOf(self.object))]),
    AddEntry: method('Adds (or replaces) the entry for a user or a role.', {
      params: {
        name: param(string, 'A user name, or "role:Operator" for everyone with that role.'),
        type: param(entryType, 'Allowed or Denied.'),
        rights: param(listOf(oneOf(RIGHTS)), 'The rights.'),
      },
      returns: nothing, right: 'changePermissions', errors: ['VM_E_USER_UNKNOWN'],
      example: { params: { name: 'ops', type: 'Allowed', rights: ['read', 'control'] }, result: null },
      handler: ({ services, self, params: { name, type, rights } }) => {
        const role = /^role:(.+)$/.exec(name)?.[1];
        if (role ? !ROLES.some((r) => r === role) : !services.users.get(name)) {
          throw new ApiError('VM_E_USER_UNKNOWN', role ? `there is no role ${role} (${ROLES.join(', ')})` : `there is no user named ${name}`);
        }
        services.access.setEntry(self.object, { name, type, rights });
      },
    }),
    RemoveEntry: method('Removes the entry for a user or role.', {
      params: { name: param(string, 'The user or "role:<Role>".') }, returns: nothing, right: 'changePermissions', errors: ['VM_E_ENTRY_UNKNOWN'],
      example: { params: { name: 'ops' }, result: null },
      handler: ({ services, self, params }) => services.access.removeEntry(self.object, params.name),
    }),
  },
};
