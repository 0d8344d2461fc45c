// Administrator passwords: scrypt hashes in a self-describing string, their verification, the
// generated password the first administrator is given, and the one strength rule.

import crypto from 'node:crypto';

const N = 16384;
const R = 8;
const P = 1;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

/** Generated passwords avoid 0/O and 1/l/I, which are misread when copied from a terminal. */
const ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';
const GENERATED_LENGTH = 20;
const MIN_LENGTH = 8;

/**
 * Parameters read back from a stored hash are bounded, so that a damaged or planted string
 * cannot make one login attempt allocate gigabytes. 32 MiB is Node's default scrypt ceiling.
 */
const MAX_SCRYPT_MEMORY = 32 * 1024 * 1024;

function scrypt(password: string, salt: Buffer, keyLength: number, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // Node's own memory check counts a little more than 128 * N * r, so its ceiling sits above
    // the bound parseHash applies: every parameter set that bound admits is then computed.
    crypto.scrypt(password, salt, keyLength, { N: n, r, p, maxmem: 2 * MAX_SCRYPT_MEMORY }, (error, key) => {
      if (error) reject(error);
      else resolve(key);
    });
  });
}

/**
 * Passwords are compared in Unicode NFC, so that "é" typed as one code point on one system and
 * as "e" plus a combining accent on another is the same password.
 */
function normalize(password: string): string {
  return password.normalize('NFC');
}

/** `scrypt$16384$8$1$<salt base64>$<hash base64>` */
export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.randomBytes(SALT_BYTES);
  const key = await scrypt(normalize(password), salt, KEY_BYTES, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** Strict base64: Buffer.from would quietly skip stray characters and accept a damaged string. */
function decodeBase64(text: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return null;
  const bytes = Buffer.from(text, 'base64');
  return bytes.toString('base64') === text ? bytes : null;
}

function positiveInteger(text: string): number | null {
  if (!/^[1-9][0-9]{0,9}$/.test(text)) return null;
  return Number(text);
}

interface ParsedHash {
  n: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

function parseHash(encoded: string): ParsedHash | null {
  if (typeof encoded !== 'string') return null;
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const n = positiveInteger(parts[1]);
  const r = positiveInteger(parts[2]);
  const p = positiveInteger(parts[3]);
  const salt = decodeBase64(parts[4]);
  const key = decodeBase64(parts[5]);
  if (n === null || r === null || p === null || salt === null || key === null) return null;
  if (n < 2 || (n & (n - 1)) !== 0) return null;
  if (r > 32 || p > 16 || 128 * n * r > MAX_SCRYPT_MEMORY) return null;
  if (salt.length < 8 || salt.length > 64 || key.length < 16 || key.length > 64) return null;
  return { n, r, p, salt, key };
}

/**
 * True when the password matches the stored hash. Other parameters than today's are accepted
 * (within bounds), so that the cost can be raised later without locking out older accounts.
 * A malformed string is a false, never an exception: a damaged user record must not become a
 * 500 on the login page.
 */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  if (typeof password !== 'string') return false;
  const parsed = parseHash(encoded);
  if (!parsed) return false;
  let key: Buffer;
  try {
    key = await scrypt(normalize(password), parsed.salt, parsed.key.length, parsed.n, parsed.r, parsed.p);
  } catch {
    return false;
  }
  return crypto.timingSafeEqual(key, parsed.key);
}

/** 20 characters from a 57-character alphabet: about 116 bits. */
export function generatePassword(): string {
  let password = '';
  // randomInt draws without modulo bias.
  for (let i = 0; i < GENERATED_LENGTH; i++) password += ALPHABET[crypto.randomInt(ALPHABET.length)];
  return password;
}

/** Null when the password is acceptable, else the reason it is not, fit to show the user. */
export function checkPasswordStrength(password: string): string | null {
  if (typeof password !== 'string') return 'a password must be text';
  // Characters, not UTF-16 units: an emoji is one character to the person typing it.
  if ([...password].length < MIN_LENGTH) return `a password needs at least ${MIN_LENGTH} characters`;
  return null;
}
