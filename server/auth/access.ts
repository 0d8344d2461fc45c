// Who may do what to which object: the rights of the caller's role, widened or narrowed by the
// object's access entries (Virtual Server's IVMSecurity), then capped by the token's role.
// Administrators keep every right, so nobody can lock the service away from them.

import { type Catalog, prepared } from '../catalog/database.js';
import { ApiError } from '../errors.js';
import { guardOf, SERVER_REF } from '../references.js';
import { RIGHTS, type Right } from './rights.js';
import type { Principal, Role } from './users.js';

export const ROLE_RIGHTS: Record<Role, readonly Right[]> = {
  Administrator: RIGHTS,
  Operator: ['read', 'control'],
  Viewer: ['read'],
};

export interface AccessEntry { name: string; type: 'Allowed' | 'Denied'; rights: Right[] }

export class AccessControl {
  constructor(private readonly db: Catalog) {}

  entries(object: string): AccessEntry[] {
    const rows = prepared(this.db, 'SELECT principal, type, rights FROM access_entries WHERE object = ? ORDER BY principal').all(object) as { principal: string; type: AccessEntry['type']; rights: string }[];
    return rows.map((r) => ({ name: r.principal, type: r.type, rights: JSON.parse(r.rights) as Right[] }));
  }

  setEntry(object: string, entry: AccessEntry): void {
    prepared(this.db, 'INSERT OR REPLACE INTO access_entries (object, principal, type, rights) VALUES (?, ?, ?, ?)')
      .run(object, entry.name, entry.type, JSON.stringify([...new Set(entry.rights)]));
  }

  removeEntry(object: string, name: string): void {
    const { changes } = prepared(this.db, 'DELETE FROM access_entries WHERE object = ? AND principal = ?').run(object, name);
    if (!changes) throw new ApiError('VM_E_ENTRY_UNKNOWN', `${object} has no access entry for ${name}`);
  }

  /** Forgets an object's entries (when the object is deleted). */
  forget(object: string): void {
    prepared(this.db, 'DELETE FROM access_entries WHERE object = ?').run(object);
  }

  /** Entries naming a user that no longer exists are dropped with the user. */
  forgetPrincipal(name: string): void {
    prepared(this.db, 'DELETE FROM access_entries WHERE principal = ?').run(name);
  }

  /**
   * Whether the caller may see an event: Security events (sign-ins, refusals, users, tokens) are
   * for administrators; the others for whoever may read the object concerned.
   */
  canSee(principal: Principal, event: { category: string; object: string | null }): boolean {
    if (event.category === 'Security') return principal.role === 'Administrator';
    return this.canRead(principal, event.object ?? SERVER_REF);
  }

  /** Whether the caller may read the object a reference names (a VM's part, a task: by the object guarding it). */
  canRead(principal: Principal, reference: string): boolean {
    return this.rightsOn(principal, guardOf(reference)).has('read');
  }

  rightsOn(principal: Principal, object: string): Set<Right> {
    const userRole = principal.userRole;
    if (userRole === 'Administrator') return new Set(ROLE_RIGHTS[principal.role]);
    const rights = new Set<Right>(ROLE_RIGHTS[userRole]);
    const mine = this.entries(object).filter((e) => e.name === principal.user || e.name === `role:${userRole}`);
    for (const e of mine.filter((m) => m.type === 'Allowed')) for (const r of e.rights) rights.add(r);
    for (const e of mine.filter((m) => m.type === 'Denied')) for (const r of e.rights) rights.delete(r);
    // A narrower token caps what the entries gave the user.
    if (principal.role !== userRole) for (const r of [...rights]) if (!ROLE_RIGHTS[principal.role].includes(r)) rights.delete(r);
    return rights;
  }
}
