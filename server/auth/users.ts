// Local users (scrypt-hashed passwords, one role each) and the API tokens bound to them. The
// first administrator is created at first start, with VSERVER_ADMIN_PASSWORD or a generated
// password that is shown once.

import { type Catalog, prepared } from '../catalog/database.js';
import { ApiError } from '../errors.js';
import type { Role } from './rights.js';
import { checkPasswordStrength, generatePassword, hashPassword, verifyPassword } from './passwords.js';
import { hashSecret, newToken, parseToken, secretMatches } from './tokens.js';

export type { Role };

/** Who is calling: a user, with the role of the token used (never more than the user's own). */
export interface Principal {
  user: string;
  /** The user's own role. */
  userRole: Role;
  /** What this call may do at most: the user's role, or the token's when that is narrower. */
  role: Role;
  tokenId: string | null;
  /**
   * A call this host answers whatever the cluster says of its VM: vserverd's own calls, and those
   * another host forwarded here (never forwarded again, so no call goes round the cluster).
   */
  answerHere?: true;
}

export interface UserInfo { name: string; role: Role; created: string }
export interface TokenInfo { id: string; user: string; role: Role; description: string; created: string; expires: string | null; lastUsed: string | null }

interface TokenRow { id: string; secret_hash: string; user: string; role: Role; description: string; created: string; expires: string | null; last_used: string | null }

/** Roles from most to least powerful; a token may be narrowed down this list. */
const RANK: Record<Role, number> = { Administrator: 0, Operator: 1, Viewer: 2 };
export function narrower(a: Role, b: Role): Role {
  return RANK[a] >= RANK[b] ? a : b;
}

/**
 * A token checked in the last few seconds is not checked again (hashing and a catalog read per
 * call were a fifth of an API call's cost). Any change to users or tokens forgets them all.
 */
const VERIFIED_MS = 10_000;
const VERIFIED_MAX = 10_000;

export class Users {
  private readonly verified = new Map<string, { principal: Principal & { expires: number }; until: number }>();

  constructor(private readonly db: Catalog) {}

  /** Creates the first administrator when there are no users; returns the generated password to show once, if any. */
  async ensureAdministrator(name: string, password: string | undefined): Promise<{ created: boolean; generated: string | null }> {
    if (this.count() > 0) return { created: false, generated: null };
    const chosen = password ?? generatePassword();
    const weak = checkPasswordStrength(chosen);
    if (weak) throw new ApiError('VM_E_WEAK_PASSWORD', `VSERVER_ADMIN_PASSWORD is refused: ${weak}`);
    await this.create(name, chosen, 'Administrator');
    return { created: true, generated: password ? null : chosen };
  }

  count(): number {
    return (prepared(this.db, 'SELECT COUNT(*) AS n FROM users').get() as { n: number }).n;
  }

  list(): UserInfo[] {
    return prepared(this.db, 'SELECT name, role, created FROM users ORDER BY name').all() as UserInfo[];
  }

  get(name: string): UserInfo | null {
    return (prepared(this.db, 'SELECT name, role, created FROM users WHERE name = ?').get(name) as UserInfo | undefined) ?? null;
  }

  async create(name: string, password: string, role: Role): Promise<void> {
    if (this.get(name)) throw new ApiError('VM_E_USER_EXISTS', `a user named ${name} already exists`);
    const weak = checkPasswordStrength(password);
    if (weak) throw new ApiError('VM_E_WEAK_PASSWORD', weak);
    prepared(this.db, 'INSERT INTO users (name, password_hash, role, created) VALUES (?, ?, ?, ?)').run(name, await hashPassword(password), role, new Date().toISOString());
  }

  delete(name: string): void {
    const user = this.require(name);
    if (user.role === 'Administrator') this.refuseLastAdministrator(name);
    prepared(this.db, 'DELETE FROM users WHERE name = ?').run(name);
    this.verified.clear();
  }

  setRole(name: string, role: Role): void {
    const user = this.require(name);
    if (user.role === 'Administrator' && role !== 'Administrator') this.refuseLastAdministrator(name);
    prepared(this.db, 'UPDATE users SET role = ? WHERE name = ?').run(role, name);
    this.verified.clear();
  }

  async setPassword(name: string, password: string): Promise<void> {
    this.require(name);
    const weak = checkPasswordStrength(password);
    if (weak) throw new ApiError('VM_E_WEAK_PASSWORD', weak);
    prepared(this.db, 'UPDATE users SET password_hash = ? WHERE name = ?').run(await hashPassword(password), name);
  }

  /** The user when the password is theirs; null otherwise (also for unknown users, after the same work). */
  async verify(name: string, password: string): Promise<UserInfo | null> {
    const row = prepared(this.db, 'SELECT name, role, created, password_hash FROM users WHERE name = ?').get(name) as (UserInfo & { password_hash: string }) | undefined;
    // An unknown user costs as much as a wrong password, so timing does not tell which names exist.
    const ok = await verifyPassword(password, row?.password_hash ?? DUMMY_HASH);
    return row && ok ? { name: row.name, role: row.role, created: row.created } : null;
  }

  createToken(user: string, options: { role?: Role; description?: string; expiresInDays?: number }): TokenInfo & { token: string } {
    const owner = this.require(user);
    const role = narrower(owner.role, options.role ?? owner.role);
    const { id, secret, token } = newToken();
    const created = new Date().toISOString();
    const expires = options.expiresInDays ? new Date(Date.now() + options.expiresInDays * 86_400_000).toISOString() : null;
    prepared(this.db, 'INSERT INTO tokens (id, secret_hash, user, role, description, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(id, hashSecret(secret), user, role, options.description ?? '', created, expires);
    return { id, token, user, role, description: options.description ?? '', created, expires, lastUsed: null };
  }

  tokens(user: string | null): TokenInfo[] {
    const rows = (user === null
      ? prepared(this.db, 'SELECT * FROM tokens ORDER BY created').all()
      : prepared(this.db, 'SELECT * FROM tokens WHERE user = ? ORDER BY created').all(user)) as TokenRow[];
    return rows.map((r) => ({ id: r.id, user: r.user, role: r.role, description: r.description, created: r.created, expires: r.expires, lastUsed: r.last_used }));
  }

  token(id: string): TokenInfo | null {
    return this.tokens(null).find((t) => t.id === id) ?? null;
  }

  revokeToken(id: string): void {
    prepared(this.db, 'DELETE FROM tokens WHERE id = ?').run(id);
    this.verified.clear();
  }

  /** The caller behind a bearer token, or null when it is unknown, wrong or expired. */
  authenticate(bearer: string): Principal | null {
    const known = this.verified.get(bearer);
    if (known && known.until > Date.now()) return known.principal;
    const principal = this.checkToken(bearer);
    if (this.verified.size >= VERIFIED_MAX) this.verified.clear();
    if (principal) this.verified.set(bearer, { principal, until: Math.min(Date.now() + VERIFIED_MS, principal.expires) });
    return principal && { user: principal.user, userRole: principal.userRole, role: principal.role, tokenId: principal.tokenId };
  }

  private checkToken(bearer: string): (Principal & { expires: number }) | null {
    const parsed = parseToken(bearer);
    if (!parsed) return null;
    const row = prepared(this.db, 'SELECT tokens.*, users.role AS user_role FROM tokens JOIN users ON users.name = tokens.user WHERE tokens.id = ?')
      .get(parsed.id) as (TokenRow & { user_role: Role }) | undefined;
    if (!row || !secretMatches(parsed.secret, row.secret_hash)) return null;
    if (row.expires && Date.parse(row.expires) < Date.now()) return null;
    // Written at most once a minute: a busy script should not turn every read into a write.
    if (!row.last_used || Date.now() - Date.parse(row.last_used) > 60_000) {
      prepared(this.db, 'UPDATE tokens SET last_used = ? WHERE id = ?').run(new Date().toISOString(), row.id);
    }
    return {
      user: row.user, userRole: row.user_role, role: narrower(row.user_role, row.role), tokenId: row.id,
      expires: row.expires ? Date.parse(row.expires) : Number.MAX_SAFE_INTEGER,
    };
  }

  private require(name: string): UserInfo {
    const user = this.get(name);
    if (!user) throw new ApiError('VM_E_USER_UNKNOWN', `there is no user named ${name}`);
    return user;
  }

  private refuseLastAdministrator(name: string): void {
    const admins = this.list().filter((u) => u.role === 'Administrator' && u.name !== name);
    if (admins.length === 0) throw new ApiError('VM_E_LAST_ADMINISTRATOR', `${name} is the last administrator; make another user an administrator first`);
  }
}

/** A valid scrypt hash of a random password, verified against when the user does not exist. */
const DUMMY_HASH = await hashPassword(generatePassword());
