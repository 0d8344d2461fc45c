// (to be written)
import type { Router } from 'express';
import type { SiteContext } from './context.js';

export function consoleRoutes(_router: Router, _ctx: SiteContext): void {}
