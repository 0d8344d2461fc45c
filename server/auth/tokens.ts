// API tokens for scripts: `vst_<id>_<secret>`, where the id finds the stored token and only a
// hash of the secret is stored.

import crypto from 'node:crypto';

const ID_BYTES = 6;
const SECRET_BYTES = 32;
/** 32 bytes in unpadded base64url are 43 characters; base64url itself may contain `_` and `-`. */
const TOKEN_SHAPE = /^vst_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
const HASH_SHAPE = /^[0-9a-f]{64}$/;

export interface NewToken {
  id: string;
  secret: string;
  /** Shown to the user once; never stored. */
  token: string;
}

export function newToken(): NewToken {
  const id = crypto.randomBytes(ID_BYTES).toString('hex');
  const secret = crypto.randomBytes(SECRET_BYTES).toString('base64url');
  return { id, secret, token: `vst_${id}_${secret}` };
}

/** The token's id and secret, or null when the text is not shaped like a token. */
export function parseToken(token: string): { id: string; secret: string } | null {
  if (typeof token !== 'string') return null;
  const match = TOKEN_SHAPE.exec(token);
  return match ? { id: match[1], secret: match[2] } : null;
}

/**
 * A plain SHA-256 is enough here, unlike passwords: the secret is 256 random bits, so a leaked
 * hash cannot be reversed by guessing, and a fast hash keeps every API call cheap.
 */
export function hashSecret(secret: string): string {
  return crypto.createHash('sha256').update(secret, 'utf8').digest('hex');
}

export function secretMatches(secret: string, hash: string): boolean {
  if (typeof secret !== 'string' || typeof hash !== 'string' || !HASH_SHAPE.test(hash)) return false;
  return crypto.timingSafeEqual(Buffer.from(hashSecret(secret), 'hex'), Buffer.from(hash, 'hex'));
}
