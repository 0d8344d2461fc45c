// Who may do what: Virtual Server's access rights and vserver's roles. A leaf module, so that
// the access checks (server/auth) and the API's declarations (server/api) both read it.

/** Virtual Server's access rights (IVMAccessRights), checked on the object a call acts on. */
export const RIGHTS = ['read', 'change', 'control', 'delete', 'changePermissions'] as const;
export type Right = (typeof RIGHTS)[number];

export const ROLES = ['Administrator', 'Operator', 'Viewer'] as const;
export type Role = (typeof ROLES)[number];
