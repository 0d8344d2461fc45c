// (to be written)
import type { Router } from 'express';
import type { SiteContext } from './context.js';

export function serverRoutes(_router: Router, _ctx: SiteContext): void {}
