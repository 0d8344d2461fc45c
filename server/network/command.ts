// Running the host's network tools (ip, nft, dnsmasq): each call time-bounded, and a failure
// becomes VM_E_NETWORK_FAILED quoting what the tool said.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ApiError } from '../errors.js';

export const COMMAND_TIME_LIMIT_MS = 10_000;

/** Folders searched besides PATH: a service's PATH may lack the sbin folders these tools live in. */
const SBIN_FOLDERS = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];

const resolved = new Map<string, string | null>();

/** The absolute path of a command, or null when the host has none. */
export function findCommand(name: string): string | null {
  if (!resolved.has(name)) {
    const folders = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...SBIN_FOLDERS];
    const found = folders.map((folder) => path.join(folder, name)).find((file) => {
      try {
        fs.accessSync(file, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    resolved.set(name, found ?? null);
  }
  return resolved.get(name) ?? null;
}

export interface CommandResult { status: number | null; stdout: string; stderr: string }

/** Runs a command (with `input` on its standard input), never longer than the time limit. */
export function runCommand(name: string, args: string[], input?: string): Promise<CommandResult> {
  const file = findCommand(name);
  if (!file) return Promise.reject(new ApiError('VM_E_NETWORK_FAILED', `the host has no ${name} command`));
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: COMMAND_TIME_LIMIT_MS });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
    child.on('error', (error) => reject(new ApiError('VM_E_NETWORK_FAILED', `${name} ${args.join(' ')}: ${error.message}`)));
    child.on('close', (status, signal) => {
      if (signal) stderr += `${stderr ? '\n' : ''}(stopped by ${signal} after ${COMMAND_TIME_LIMIT_MS} ms at most)`;
      resolve({ status, stdout, stderr });
    });
    child.stdin.on('error', () => { /* the command ended without reading: its status says why */ });
    child.stdin.end(input ?? '');
  });
}

/** Runs a command that must succeed; its standard output. */
export async function mustRun(name: string, args: string[], input?: string): Promise<string> {
  const result = await runCommand(name, args, input);
  if (result.status !== 0) {
    throw new ApiError('VM_E_NETWORK_FAILED', `${name} ${args.join(' ')} failed: ${result.stderr.trim() || `exit status ${result.status}`}`);
  }
  return result.stdout;
}
