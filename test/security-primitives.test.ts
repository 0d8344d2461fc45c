// The security primitives the API and the administration site are built on: password hashes,
// API tokens, the login rate limiter (on an injected clock) and the storage roots every file
// path must lie in, tried against real files, folders and symlinks in a temporary folder.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { checkPasswordStrength, generatePassword, hashPassword, verifyPassword } from '../server/auth/passwords.js';
import { LoginRateLimiter } from '../server/auth/rate-limit.js';
import { hashSecret, newToken, parseToken, secretMatches } from '../server/auth/tokens.js';
import { type StoragePathCode, StoragePathError, StorageRoots } from '../server/storage-roots.js';

const MINUTE = 60_000;

describe('passwords', () => {
  test('a password verifies against its own hash and the hash says how it was made', async () => {
    const encoded = await hashPassword('correct horse battery staple');
    assert.match(encoded, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
    assert.equal(await verifyPassword('correct horse battery staple', encoded), true);
  });

  test('a wrong password, or one differing only in case or a trailing space, does not verify', async () => {
    const encoded = await hashPassword('Tr0ub4dor&3');
    assert.equal(await verifyPassword('Tr0ub4dor&4', encoded), false);
    assert.equal(await verifyPassword('tr0ub4dor&3', encoded), false);
    assert.equal(await verifyPassword('Tr0ub4dor&3 ', encoded), false);
    assert.equal(await verifyPassword('', encoded), false);
  });

  test('two hashes of one password differ, each salted afresh, and both verify', async () => {
    const [a, b] = await Promise.all([hashPassword('same password'), hashPassword('same password')]);
    assert.notEqual(a, b);
    assert.notEqual(a.split('$')[4], b.split('$')[4], 'the salts differ');
    assert.equal(await verifyPassword('same password', a), true);
    assert.equal(await verifyPassword('same password', b), true);
  });

  test('a password composed differently in Unicode (é as one code point or e + accent) is the same password', async () => {
    const encoded = await hashPassword('caf\u00e9 au lait');
    assert.equal(await verifyPassword('cafe\u0301 au lait', encoded), true);
  });

  test('a malformed or tampered encoding is false, never an exception', async () => {
    const good = await hashPassword('secret password');
    const [, n, r, p, salt, hash] = good.split('$');
    const malformed = [
      '',
      'scrypt',
      'scrypt$$$$$',
      `bcrypt$${n}$${r}$${p}$${salt}$${hash}`,
      `scrypt$${n}$${r}$${p}$${salt}`,
      `scrypt$${n}$${r}$${p}$${salt}$${hash}$extra`,
      `scrypt$abc$${r}$${p}$${salt}$${hash}`,
      `scrypt$-16384$${r}$${p}$${salt}$${hash}`,
      `scrypt$16385$${r}$${p}$${salt}$${hash}`, // not a power of two
      `scrypt$1099511627776$${r}$${p}$${salt}$${hash}`, // would need terabytes
      `scrypt$${n}$0$${p}$${salt}$${hash}`,
      `scrypt$${n}$${r}$${p}$not*base64$${hash}`,
      `scrypt$${n}$${r}$${p}$${salt}$${hash.slice(0, 20)}`, // truncated
      `scrypt$${n}$${r}$${p}$${salt}$`,
      null as unknown as string,
      42 as unknown as string,
    ];
    for (const encoded of malformed) {
      assert.equal(await verifyPassword('secret password', encoded), false, `accepted ${JSON.stringify(encoded)}`);
    }
  });

  test('a hash made with other parameters still verifies, so the cost can be raised later', async () => {
    const encoded = await hashPassword('secret password');
    const [, , , , salt, hash] = encoded.split('$');
    // Same salt and key but claimed N=1024: a different key is derived, so it must not match...
    assert.equal(await verifyPassword('secret password', `scrypt$1024$8$1$${salt}$${hash}`), false);
    // ...while the original still does.
    assert.equal(await verifyPassword('secret password', encoded), true);
  });

  test('a generated password is 20 characters without 0, O, 1, l or I, and passes the strength rule', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const password = generatePassword();
      assert.match(password, /^[A-Za-z2-9]{20}$/);
      assert.doesNotMatch(password, /[0O1lI]/);
      assert.equal(checkPasswordStrength(password), null);
      seen.add(password);
    }
    assert.equal(seen.size, 200, 'no two generated passwords are the same');
  });

  test('a password needs at least 8 characters, counted as characters rather than bytes', () => {
    assert.equal(checkPasswordStrength('1234567'), 'a password needs at least 8 characters');
    assert.equal(checkPasswordStrength(''), 'a password needs at least 8 characters');
    assert.equal(checkPasswordStrength('12345678'), null);
    // Seven emoji are 14 UTF-16 units but seven characters.
    assert.equal(checkPasswordStrength('🔑'.repeat(7)), 'a password needs at least 8 characters');
    assert.equal(checkPasswordStrength('🔑'.repeat(8)), null);
  });
});

describe('API tokens', () => {
  test('a new token is vst_<12 hex>_<43 base64url> and parses back to its id and secret', () => {
    const { id, secret, token } = newToken();
    assert.match(id, /^[0-9a-f]{12}$/);
    assert.match(secret, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(token, `vst_${id}_${secret}`);
    assert.deepEqual(parseToken(token), { id, secret });
  });

  test('a secret containing _ and - (base64url) still parses whole', () => {
    const secret = '_-' + 'a'.repeat(39) + '-_';
    assert.deepEqual(parseToken(`vst_0123456789ab_${secret}`), { id: '0123456789ab', secret });
  });

  test('two tokens differ in id and secret', () => {
    const a = newToken();
    const b = newToken();
    assert.notEqual(a.id, b.id);
    assert.notEqual(a.secret, b.secret);
  });

  test('text not shaped like a token parses to null', () => {
    const { id, secret } = newToken();
    const malformed = [
      '',
      'vst_',
      `${id}_${secret}`,
      `vsx_${id}_${secret}`,
      `VST_${id}_${secret}`,
      `vst_${id.toUpperCase()}_${secret}`,
      `vst_${id.slice(1)}_${secret}`,
      `vst_${id}x_${secret}`,
      `vst_${id}_${secret.slice(1)}`,
      `vst_${id}_${secret}A`,
      `vst_${id}_${secret.slice(1)}=`,
      `vst_${id}_${secret}\n`,
      ` vst_${id}_${secret}`,
      `Bearer vst_${id}_${secret}`,
      undefined as unknown as string,
    ];
    for (const token of malformed) assert.equal(parseToken(token), null, `parsed ${JSON.stringify(token)}`);
  });

  test('a secret matches its own hash only; a malformed hash matches nothing', () => {
    const { secret } = newToken();
    const hash = hashSecret(secret);
    assert.match(hash, /^[0-9a-f]{64}$/);
    assert.equal(secretMatches(secret, hash), true);
    assert.equal(secretMatches(newToken().secret, hash), false);
    assert.equal(secretMatches(secret.slice(1), hash), false);
    assert.equal(secretMatches(secret, hash.slice(2)), false);
    assert.equal(secretMatches(secret, hash.toUpperCase()), false);
    assert.equal(secretMatches(secret, ''), false);
    assert.equal(secretMatches(secret, `${hash.slice(0, 63)}z`), false);
  });
});

describe('login rate limiter', () => {
  function limiter(options: { maxFailures?: number; windowMs?: number; lockoutMs?: number } = {}) {
    const clock = { now: 1_000_000 };
    const limits = new LoginRateLimiter({ ...options, now: () => clock.now });
    return { clock, limits };
  }
  const KEYS = ['ip:127.0.0.1', 'user:admin'];

  test('four failures are allowed; the fifth locks both keys for 60 seconds', () => {
    const { limits } = limiter();
    for (let i = 0; i < 4; i++) {
      assert.deepEqual(limits.check(KEYS), { allowed: true });
      limits.recordFailure(KEYS);
    }
    assert.deepEqual(limits.check(KEYS), { allowed: true });
    limits.recordFailure(KEYS);
    assert.deepEqual(limits.check(KEYS), { allowed: false, retryAfterSeconds: 60 });
    assert.deepEqual(limits.check(['ip:127.0.0.1']), { allowed: false, retryAfterSeconds: 60 });
    assert.deepEqual(limits.check(['user:admin']), { allowed: false, retryAfterSeconds: 60 });
  });

  test('any locked key refuses the attempt: another user from a locked address, or a locked user from another address', () => {
    const { limits } = limiter();
    for (let i = 0; i < 5; i++) limits.recordFailure(KEYS);
    assert.equal(limits.check(['ip:127.0.0.1', 'user:operator']).allowed, false);
    assert.equal(limits.check(['ip:10.0.0.2', 'user:admin']).allowed, false);
    assert.deepEqual(limits.check(['ip:10.0.0.2', 'user:operator']), { allowed: true });
  });

  test('the lockout ends 60 seconds after the latest failure, counting down meanwhile', () => {
    const { clock, limits } = limiter();
    for (let i = 0; i < 5; i++) {
      limits.recordFailure(KEYS);
      clock.now += 1000;
    }
    // The latest failure was 1 s ago.
    assert.deepEqual(limits.check(KEYS), { allowed: false, retryAfterSeconds: 59 });
    clock.now += 58_500;
    assert.deepEqual(limits.check(KEYS), { allowed: false, retryAfterSeconds: 1 });
    clock.now += 500;
    assert.deepEqual(limits.check(KEYS), { allowed: true });
  });

  test('each failure after the lockout doubles it: 2, 4, 8 minutes, then no more than 15, however long it goes on', () => {
    const { clock, limits } = limiter();
    for (let i = 0; i < 5; i++) limits.recordFailure(KEYS);
    const lockouts: number[] = [];
    // By the sixth lockout the first five failures are long out of the window: the level holds.
    for (let i = 0; i < 7; i++) {
      const decision = limits.check(KEYS);
      assert.equal(decision.allowed, false);
      if (decision.allowed) return;
      lockouts.push(decision.retryAfterSeconds);
      clock.now += decision.retryAfterSeconds * 1000;
      assert.deepEqual(limits.check(KEYS), { allowed: true }, 'allowed again once the lockout ends');
      limits.recordFailure(KEYS);
    }
    assert.deepEqual(lockouts, [60, 120, 240, 480, 900, 900, 900]);
    assert.deepEqual(limits.check(KEYS), { allowed: false, retryAfterSeconds: 900 });
  });

  test('a failure less than a window after the lockout ended doubles it; one a whole window after starts afresh', () => {
    const { clock, limits } = limiter();
    for (let i = 0; i < 5; i++) limits.recordFailure(KEYS);
    clock.now += MINUTE + 14 * MINUTE;
    limits.recordFailure(KEYS);
    assert.deepEqual(limits.check(KEYS), { allowed: false, retryAfterSeconds: 120 });

    clock.now += 2 * MINUTE + 15 * MINUTE;
    limits.recordFailure(KEYS);
    assert.deepEqual(limits.check(KEYS), { allowed: true }, 'one failure, not the seventh');
  });

  test('failures older than the window no longer count', () => {
    const { clock, limits } = limiter();
    for (let i = 0; i < 4; i++) limits.recordFailure(KEYS);
    clock.now += 15 * MINUTE;
    limits.recordFailure(KEYS);
    assert.deepEqual(limits.check(KEYS), { allowed: true }, 'one failure in the window, not five');
  });

  test('a success clears the keys it is given and no others', () => {
    const { limits } = limiter();
    for (let i = 0; i < 4; i++) limits.recordFailure(KEYS);
    limits.recordSuccess(['user:admin']);
    limits.recordFailure(KEYS);
    assert.equal(limits.check(['ip:127.0.0.1']).allowed, false, 'the address kept its four earlier failures');
    assert.deepEqual(limits.check(['user:admin']), { allowed: true }, 'the user starts again from one');
    limits.recordSuccess(KEYS);
    assert.deepEqual(limits.check(KEYS), { allowed: true });
    assert.equal(limits.size, 0);
  });

  test('the limits are configurable', () => {
    const { clock, limits } = limiter({ maxFailures: 3, windowMs: MINUTE, lockoutMs: 10_000 });
    for (let i = 0; i < 3; i++) limits.recordFailure(['user:admin']);
    assert.deepEqual(limits.check(['user:admin']), { allowed: false, retryAfterSeconds: 10 });
    clock.now += MINUTE;
    assert.deepEqual(limits.check(['user:admin']), { allowed: true });
    assert.throws(() => new LoginRateLimiter({ maxFailures: 0 }), RangeError);
    assert.throws(() => new LoginRateLimiter({ windowMs: Number.NaN }), RangeError);
  });

  test('keys idle for the whole window are forgotten', () => {
    const { clock, limits } = limiter();
    limits.recordFailure(['ip:10.0.0.1', 'user:a']);
    clock.now += 10 * MINUTE;
    limits.recordFailure(['ip:10.0.0.2', 'user:b']);
    assert.equal(limits.size, 4);
    clock.now += 6 * MINUTE;
    limits.recordFailure(['ip:10.0.0.3']);
    assert.equal(limits.size, 3, 'the keys of the first failure, 16 minutes old, are gone');
  });

  test('no more than 10,000 keys are kept: a flood of new keys pushes out the oldest', () => {
    const { clock, limits } = limiter();
    for (let i = 0; i < 5; i++) limits.recordFailure(['user:oldest']);
    assert.equal(limits.check(['user:oldest']).allowed, false);
    for (let i = 0; i < 10_000; i++) {
      clock.now += 1;
      limits.recordFailure([`user:flood-${i}`]);
    }
    assert.equal(limits.size, 10_000);
    assert.deepEqual(limits.check(['user:oldest']), { allowed: true }, 'the oldest key was dropped');
    for (let i = 0; i < 4; i++) limits.recordFailure(['user:flood-9999']);
    assert.equal(limits.check(['user:flood-9999']).allowed, false, 'the newest keys are kept');
    assert.equal(limits.size, 10_000);
  });
});

describe('storage roots', () => {
  // realpath: the temporary folder may itself lie behind a symlink (/tmp on macOS).
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-storage-roots-')));
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  const first = path.join(base, 'vms');
  const second = path.join(base, 'vhd');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(path.join(first, 'web'), { recursive: true });
  fs.mkdirSync(second);
  fs.mkdirSync(path.join(outside, 'secrets'), { recursive: true });
  fs.writeFileSync(path.join(first, 'web', 'web.vhd'), Buffer.alloc(1536));
  fs.writeFileSync(path.join(second, 'base.vhd'), Buffer.alloc(512));
  fs.writeFileSync(path.join(outside, 'shadow'), 'root:*:');
  // A sibling whose name starts with a root's name: a prefix test on strings would let it in.
  fs.mkdirSync(`${first}-evil`);
  fs.writeFileSync(path.join(`${first}-evil`, 'x.vhd'), '');
  fs.symlinkSync(path.join(outside, 'shadow'), path.join(first, 'link.vhd'));
  fs.symlinkSync(path.join(outside, 'secrets'), path.join(first, 'escape'));
  fs.symlinkSync(path.join(outside, 'planted.vhd'), path.join(first, 'dangling.vhd'));
  fs.symlinkSync(path.join(second, 'base.vhd'), path.join(first, 'web', 'parent.vhd'));
  fs.symlinkSync('../../vhd', path.join(first, 'web', 'shared'));
  fs.symlinkSync('loop-b', path.join(first, 'loop-a'));
  fs.symlinkSync('loop-a', path.join(first, 'loop-b'));

  const storage = new StorageRoots([first, second]);
  const ROOTS = `(${first}, ${second})`;

  /** The call must throw a StoragePathError with this code; returns its message. */
  function refused(action: () => unknown, code: StoragePathCode): string {
    let result: unknown;
    try {
      result = action();
    } catch (e) {
      if (!(e instanceof StoragePathError)) throw e;
      assert.equal(e.code, code, e.message);
      assert.equal(e.name, 'StoragePathError');
      return e.message;
    }
    assert.fail(`accepted, giving ${JSON.stringify(result)}`);
  }

  test('the roots are real absolute paths in the order given; missing ones are created, duplicates kept once', () => {
    assert.deepEqual(storage.roots, [first, second]);
    const created = path.join(base, 'new', 'deep', 'root');
    const viaLink = path.join(base, 'vms-link');
    fs.symlinkSync(first, viaLink);
    const roots = new StorageRoots([created, viaLink, first]);
    assert.deepEqual(roots.roots, [created, first]);
    assert.ok(fs.statSync(created).isDirectory());
    assert.throws(() => new StorageRoots([]));
  });

  test('a file inside a root resolves to its real absolute path, existing or not', () => {
    assert.equal(storage.resolve(path.join(first, 'web', 'web.vhd'), { mustExist: true }), path.join(first, 'web', 'web.vhd'));
    assert.equal(storage.resolve(path.join(second, 'base.vhd'), { mustExist: true }), path.join(second, 'base.vhd'));
    assert.equal(storage.resolve(path.join(second, 'new', 'disk.vhd')), path.join(second, 'new', 'disk.vhd'));
    assert.equal(storage.resolve(`${first}/web/./../web//web.vhd`), path.join(first, 'web', 'web.vhd'));
    assert.equal(storage.resolve(first), first);
  });

  test('a relative path is taken from the first root, not the working folder', () => {
    assert.notEqual(process.cwd(), first);
    assert.equal(storage.resolve('web/web.vhd', { mustExist: true }), path.join(first, 'web', 'web.vhd'));
    assert.equal(storage.resolve('disk.vhd'), path.join(first, 'disk.vhd'));
    assert.equal(storage.resolve('../vhd/base.vhd'), path.join(second, 'base.vhd'), 'a relative path may reach another root');
  });

  test('a relative path that climbs out with .. is refused, named as given and as resolved', () => {
    const message = refused(() => storage.resolve('web/../../outside/shadow'), 'VM_E_PATH_OUTSIDE_ROOTS');
    assert.equal(message, `web/../../outside/shadow (${path.join(outside, 'shadow')}) is outside the storage roots ${ROOTS}`);
    refused(() => storage.resolve(`${first}/../outside/new.vhd`), 'VM_E_PATH_OUTSIDE_ROOTS');
    refused(() => storage.resolve('../../../../../../../../etc/passwd'), 'VM_E_PATH_OUTSIDE_ROOTS');
  });

  test('an absolute path outside every root is refused, even one whose name begins with a root\'s', () => {
    assert.equal(refused(() => storage.resolve('/etc/passwd'), 'VM_E_PATH_OUTSIDE_ROOTS'), `/etc/passwd is outside the storage roots ${ROOTS}`);
    refused(() => storage.resolve(path.join(`${first}-evil`, 'x.vhd')), 'VM_E_PATH_OUTSIDE_ROOTS');
    refused(() => storage.resolve(base), 'VM_E_PATH_OUTSIDE_ROOTS');
    refused(() => storage.resolve('/'), 'VM_E_PATH_OUTSIDE_ROOTS');
  });

  test('a symlink inside a root pointing at a file outside is refused, naming where it leads', () => {
    const message = refused(() => storage.resolve(path.join(first, 'link.vhd'), { mustExist: true }), 'VM_E_PATH_OUTSIDE_ROOTS');
    assert.equal(message, `${path.join(first, 'link.vhd')} leads to ${path.join(outside, 'shadow')}, outside the storage roots ${ROOTS}`);
    refused(() => storage.resolve('link.vhd'), 'VM_E_PATH_OUTSIDE_ROOTS');
  });

  test('a new file under a symlinked folder that points outside is refused', () => {
    const message = refused(() => storage.resolve('escape/new.vhd'), 'VM_E_PATH_OUTSIDE_ROOTS');
    assert.match(message, new RegExp(`leads to ${path.join(outside, 'secrets', 'new.vhd')}, outside`));
    refused(() => storage.resolve('escape/deeper/still/new.vhd'), 'VM_E_PATH_OUTSIDE_ROOTS');
    refused(() => storage.resolve('escape'), 'VM_E_PATH_OUTSIDE_ROOTS');
  });

  test('a dangling symlink pointing outside is refused, since creating through it would create its target', () => {
    const message = refused(() => storage.resolve('dangling.vhd'), 'VM_E_PATH_OUTSIDE_ROOTS');
    assert.match(message, new RegExp(`leads to ${path.join(outside, 'planted.vhd')}, outside`));
    assert.equal(fs.existsSync(path.join(outside, 'planted.vhd')), false);
  });

  test('a symlink inside the roots pointing elsewhere inside is allowed and resolves to its target', () => {
    assert.equal(storage.resolve('web/parent.vhd', { mustExist: true }), path.join(second, 'base.vhd'));
    assert.equal(storage.resolve('web/shared/base.vhd', { mustExist: true }), path.join(second, 'base.vhd'));
    assert.equal(storage.resolve('web/shared/new.vhd'), path.join(second, 'new.vhd'));
  });

  test('a path through a symlink outside the roots that leads back inside is allowed', () => {
    const alias = path.join(outside, 'alias-of-vhd');
    fs.symlinkSync(second, alias);
    assert.equal(storage.resolve(path.join(alias, 'base.vhd'), { mustExist: true }), path.join(second, 'base.vhd'));
  });

  test('NUL characters, empty strings and values that are not strings are refused as invalid', () => {
    assert.match(refused(() => storage.resolve('disk.vhd\0.txt'), 'VM_E_INVALID_PATH'), /NUL/);
    refused(() => storage.resolve(`${first}/\0`), 'VM_E_INVALID_PATH');
    refused(() => storage.resolve(''), 'VM_E_INVALID_PATH');
    for (const value of [undefined, null, 42, ['disk.vhd'], { path: 'disk.vhd' }]) {
      refused(() => storage.resolve(value as unknown as string), 'VM_E_INVALID_PATH');
    }
  });

  test('symlinks that loop are refused as invalid', () => {
    assert.match(refused(() => storage.resolve('loop-a'), 'VM_E_INVALID_PATH'), /loop/);
    refused(() => storage.resolve('loop-a/new.vhd'), 'VM_E_INVALID_PATH');
  });

  test('mustExist: a missing file is not found, named with its kind, as given and as resolved', () => {
    const message = refused(() => storage.resolve('disk.vhd', { mustExist: true, kind: 'hard disk image' }), 'VM_E_FILE_NOT_FOUND');
    assert.equal(message, `the hard disk image disk.vhd (${path.join(first, 'disk.vhd')}) does not exist`);
    const absolute = path.join(second, 'missing', 'disk.vhd');
    assert.equal(refused(() => storage.resolve(absolute, { mustExist: true }), 'VM_E_FILE_NOT_FOUND'), `${absolute} does not exist`);
    refused(() => storage.resolve('web/web.vhd/child.vhd', { mustExist: true }), 'VM_E_FILE_NOT_FOUND');
  });

  test('mustExist: a missing file outside the roots is refused as outside, telling nothing of what exists there', () => {
    const missing = refused(() => storage.resolve('/etc/no-such-file', { mustExist: true }), 'VM_E_PATH_OUTSIDE_ROOTS');
    const present = refused(() => storage.resolve('/etc/passwd', { mustExist: true }), 'VM_E_PATH_OUTSIDE_ROOTS');
    assert.equal(missing.replace('no-such-file', 'passwd'), present);
  });

  test('list() shows the first root by default: folders first, sizes of files, no symlinks leading outside', () => {
    const listing = storage.list();
    assert.equal(listing.root, first);
    assert.equal(listing.path, first);
    // escape, link.vhd and dangling.vhd lead outside; the loops lead nowhere.
    assert.deepEqual(listing.entries, [{ name: 'web', path: path.join(first, 'web'), type: 'folder', size: 0 }]);
  });

  test('list() shows a folder inside the roots, including symlinks that stay inside, each path taken back by resolve()', () => {
    const listing = storage.list('web');
    assert.equal(listing.root, first);
    assert.deepEqual(listing.entries, [
      { name: 'shared', path: path.join(first, 'web', 'shared'), type: 'folder', size: 0 },
      { name: 'parent.vhd', path: path.join(first, 'web', 'parent.vhd'), type: 'file', size: 512 },
      { name: 'web.vhd', path: path.join(first, 'web', 'web.vhd'), type: 'file', size: 1536 },
    ]);
    for (const entry of listing.entries) storage.resolve(entry.path, { mustExist: true });
    assert.equal(storage.list(second).root, second);
    assert.equal(storage.list('web/shared').path, second);
  });

  test('list() refuses folders outside the roots, through .. or a symlink, missing folders and files', () => {
    refused(() => storage.list('..'), 'VM_E_PATH_OUTSIDE_ROOTS');
    refused(() => storage.list(outside), 'VM_E_PATH_OUTSIDE_ROOTS');
    refused(() => storage.list('escape'), 'VM_E_PATH_OUTSIDE_ROOTS');
    assert.match(refused(() => storage.list('nowhere'), 'VM_E_FILE_NOT_FOUND'), /^the folder nowhere .* does not exist$/);
    assert.match(refused(() => storage.list('web/web.vhd'), 'VM_E_INVALID_PATH'), /is not a folder/);
  });
});
