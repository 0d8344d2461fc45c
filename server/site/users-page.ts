// Users and Permissions, for administrators: the local users (create, change role, set password,
// delete), the API tokens (revoke) and the access entries of the server and of each VM (read and
// changed in permissions.ts). Every change is an API call as the signed-in administrator; a
// refusal is shown beside the field it concerns, on the page rendered again with the refusal's
// status (context.ts refusalStatus: 400, or 403 when the API says a right is missing).

import type { NextFunction, Response, Router } from 'express';
import { ApiError } from '../errors.js';
import { fieldOf, htmlPattern } from '../api/fields.js';
import { RIGHTS } from '../api/schema-types.js';
import { ROLES } from '../api/schema.js';
import type { TokenInfo, UserInfo } from '../auth/users.js';
import { type FieldErrors, type SiteContext, type SiteRequest, api, refuseFor, refusalStatus, refusePage } from './context.js';
import { formatTime } from './events-page.js';
import { answerDone, refusalErrors, refuseForm } from './forms.js';
import { ENTRY_FIELDS, RIGHT_MEANINGS, addEntry, readPermissions, removeEntry } from './permissions.js';

/** What a finished change says on the page it returns to: `done` and `name` in the query pick it. */
const NOTICES: Record<string, (name: string) => string> = {
  created: (name) => `User ${name} was created.`,
  role: (name) => `The role of ${name} was changed.`,
  password: (name) => `The password of ${name} was set, and their website sessions were ended.`,
  deleted: (name) => `User ${name} was deleted, with their tokens, sessions and access entries.`,
  revoked: (name) => `Token ${name} was revoked.`,
  entry: (name) => `The access entry for ${name} was saved.`,
  removed: (name) => `The access entry for ${name} was removed.`,
};

/** The Add a user form's name field, as CreateUser declares it: its length, pattern (as HTML takes it) and help. */
const USER_NAME = fieldOf('VirtualServer.CreateUser', 'name');
const USER_NAME_INPUT = { maxLength: USER_NAME.maxLength, pattern: USER_NAME.pattern === undefined ? undefined : htmlPattern(USER_NAME.pattern), help: USER_NAME.help };

interface PageState { status?: number; errors?: FieldErrors; values?: Record<string, string | string[]>; object?: string }

/** Names a refusal's field: by the API's parameter or error name (both keys of `fields`), else `fallback`. */
function errorsFor(error: unknown, fields: Record<string, string>, fallback = '_form'): FieldErrors {
  return refusalErrors(error, (e) => fields[e.errorName] ?? fallback, fields);
}

/**
 * Makes a change through the API and answers: back to the page with a notice (or `{ok: true}` for
 * scripts), or, when refused, the page again with the message beside its field.
 */
async function change(ctx: SiteContext, req: SiteRequest, res: Response, run: () => Promise<unknown>, refused: (error: unknown) => FieldErrors, done: { notice: string; name: string; back: string }): Promise<void> {
  try {
    await run();
  } catch (error) {
    const status = refusalStatus(error, 'form');
    const errors = refused(error);
    const body = req.body as Record<string, unknown>;
    return refuseForm(req, res, status, errors, () => renderUsers(ctx, req, res, { status, errors, values: formValues(body), object: typeof body.object === 'string' ? body.object : undefined }));
  }
  const query = new URLSearchParams({ done: done.notice, name: done.name });
  answerDone(req, res, `/users?${query}${done.back}`, {});
}

/** The posted fields to show again in the forms (the rights checked are a list); never a password. */
function formValues(body: Record<string, unknown>): Record<string, string | string[]> {
  return Object.fromEntries(Object.entries(body).filter(([key, value]) => (typeof value === 'string' || Array.isArray(value)) && key !== 'password' && key !== '_csrf')) as Record<string, string | string[]>;
}

async function renderUsers(ctx: SiteContext, req: SiteRequest, res: Response, state: PageState = {}): Promise<void> {
  const [users, tokens] = await Promise.all([api<UserInfo[]>(ctx, req, 'VirtualServer.get_Users'), api<TokenInfo[]>(ctx, req, 'VirtualServer.get_Tokens')]);
  const permissions = await readPermissions(ctx, req, state.object ?? 'VirtualServer', users);
  const errors = { ...(permissions.problem ? { object: permissions.problem } : {}), ...state.errors };
  const done = typeof req.query.done === 'string' && Object.hasOwn(NOTICES, req.query.done) ? req.query.done : null;
  res.status(state.status ?? 200).render('server/users', {
    title: 'Users and Permissions', users, tokens, permissions, roles: ROLES, rights: RIGHTS, rightMeanings: RIGHT_MEANINGS,
    me: req.caller!.principal.user, errors, values: state.values ?? {}, formatTime, userName: USER_NAME_INPUT,
    notice: done && state.status === undefined ? NOTICES[done](typeof req.query.name === 'string' ? req.query.name : '') : null,
  });
}

export function userRoutes(router: Router, ctx: SiteContext): void {
  // The page is for administrators (the navigation hides it from others); the API checks each call as well.
  router.use('/users', (req: SiteRequest, res: Response, next: NextFunction) => {
    if (req.caller!.principal.role !== 'Administrator') return refusePage(req, res, 403, 'Users and Permissions is for administrators');
    next();
  });

  router.get('/users', async (req: SiteRequest, res: Response) => {
    try {
      await renderUsers(ctx, req, res, { object: typeof req.query.object === 'string' ? req.query.object : undefined });
    } catch (error) {
      refuseFor(req, res, error);
    }
  });

  router.post('/users', async (req: SiteRequest, res: Response) => {
    const { name, role, password } = fields(req, 'name', 'role', 'password');
    await change(ctx, req, res, () => api(ctx, req, 'VirtualServer.CreateUser', { name, role, password }),
      (error) => errorsFor(error, { name: 'name', role: 'role', password: 'password', VM_E_USER_EXISTS: 'name', VM_E_WEAK_PASSWORD: 'password' }),
      { notice: 'created', name, back: '#users' });
  });

  router.post('/users/:name/role', async (req: SiteRequest, res: Response) => {
    const name = String(req.params.name);
    const { role } = fields(req, 'role');
    await change(ctx, req, res, () => api(ctx, req, 'VirtualServer.SetUserRole', { name, role }), (error) => errorsFor(error, {}, `role-${name}`), { notice: 'role', name, back: '#users' });
  });

  router.post('/users/:name/password', async (req: SiteRequest, res: Response) => {
    const name = String(req.params.name);
    const { password } = fields(req, 'password');
    await change(ctx, req, res, () => api(ctx, req, 'VirtualServer.SetUserPassword', { name, password }), (error) => errorsFor(error, {}, `password-${name}`), { notice: 'password', name, back: '#users' });
  });

  router.post('/users/:name/delete', async (req: SiteRequest, res: Response) => {
    const name = String(req.params.name);
    const deleteUser = async (): Promise<void> => {
      // The API would let an administrator delete themselves while another remains; the page keeps the one signed in.
      if (name === req.caller!.principal.user) throw new ApiError('VM_E_INVALID_PARAMS', `you are signed in as ${name}: another administrator must delete this user`);
      await api(ctx, req, 'VirtualServer.DeleteUser', { name });
    };
    await change(ctx, req, res, deleteUser, (error) => errorsFor(error, {}, `delete-${name}`), { notice: 'deleted', name, back: '#users' });
  });

  router.post('/users/tokens/:id/revoke', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    await change(ctx, req, res, () => api(ctx, req, 'VirtualServer.RevokeToken', { id }), (error) => errorsFor(error, {}, `token-${id}`), { notice: 'revoked', name: id, back: '#tokens' });
  });

  router.post('/users/permissions', async (req: SiteRequest, res: Response) => {
    const { object, who, type } = fields(req, 'object', 'who', 'type');
    const rights = ([] as unknown[]).concat((req.body as Record<string, unknown>).rights ?? []).filter((r): r is string => typeof r === 'string');
    await change(ctx, req, res, () => addEntry(ctx, req, { object, who, type, rights }), (error) => errorsFor(error, ENTRY_FIELDS), { notice: 'entry', name: who, back: toObject(object) });
  });

  router.post('/users/permissions/remove', async (req: SiteRequest, res: Response) => {
    const { object, who } = fields(req, 'object', 'who');
    await change(ctx, req, res, () => removeEntry(ctx, req, { object, who }), (error) => errorsFor(error, {}, `entry-${who}`), { notice: 'removed', name: who, back: toObject(object) });
  });
}

/** Back to the permissions of `object`. */
function toObject(object: string): string {
  return `&${new URLSearchParams({ object })}#permissions`;
}

/** Text fields of the posted form ("" when absent or not text). */
function fields<K extends string>(req: SiteRequest, ...names: K[]): Record<K, string> {
  const body = req.body as Record<string, unknown>;
  return Object.fromEntries(names.map((n) => [n, typeof body[n] === 'string' ? body[n] : ''])) as Record<K, string>;
}
