// The answers vserverd gives at the HTTP level, before or instead of a JSON-RPC call: each is a
// JSON-RPC error body (so API clients read every refusal the same way) with its name's HTTP status
// from the catalogue.

import type { NextFunction, Request, Response } from 'express';
import { ERRORS, type ErrorName, rpcErrorObject } from '../error-catalogue.js';

/** Answers with `name`'s HTTP status and a JSON-RPC error body that belongs to no call (id null). */
export function sendRpcRefusal(res: Response, name: ErrorName, message: string): void {
  res.status(ERRORS[name].http).json({ jsonrpc: '2.0', id: null, error: rpcErrorObject(name, message) });
}

/** What no route answered. */
export function notFound(req: Request, res: Response): void {
  res.status(404).type('text/plain').send(`${req.path}: not found\n`);
}

/**
 * Express's last resort. A body over its limit is VM_E_REQUEST_TOO_LARGE; another the body parser
 * could not read is the request's fault, VM_E_BAD_REQUEST, with the parser's status (415 for a
 * charset it cannot decode, 400 mostly); anything else is vserverd's own: logged with its stack,
 * and the caller hears only "internal error".
 */
export function lastResort(error: Error & { status?: number; type?: string }, _req: Request, res: Response, _next: NextFunction): void {
  void _next;
  const status = error.status ?? 500;
  if (error.type === 'entity.too.large') {
    sendRpcRefusal(res, 'VM_E_REQUEST_TOO_LARGE', error.message);
  } else if (status < 500) {
    res.status(status).json({ jsonrpc: '2.0', id: null, error: rpcErrorObject('VM_E_BAD_REQUEST', error.message) });
  } else {
    console.error('vserverd: internal error:', error);
    sendRpcRefusal(res, 'VM_E_INTERNAL', 'internal error');
  }
}
