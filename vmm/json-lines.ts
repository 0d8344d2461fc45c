// One JSON value per line on a stream socket: what QMP and the worker's control socket speak.
// A line too long to be a message, or one that is not JSON, ends the connection rather than
// the process.

import type net from 'node:net';

const MAX_LINE = 16 * 1024 * 1024;

/** Calls onLine with each complete non-empty line the socket sends. */
export function onLines(socket: net.Socket, onLine: (line: string) => void, maxLine = MAX_LINE): void {
  let buffer = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (line) onLine(line);
    }
    if (buffer.length > maxLine) socket.destroy(new Error(`a line longer than ${maxLine} bytes`));
  });
}

/** Calls onMessage with each JSON object the socket sends; anything else closes the connection. */
export function onJsonObjects(socket: net.Socket, onMessage: (message: Record<string, unknown>) => void): void {
  onLines(socket, (line) => {
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      socket.destroy(new Error('a line that is not JSON'));
      return;
    }
    if (typeof message === 'object' && message !== null && !Array.isArray(message)) onMessage(message as Record<string, unknown>);
    else socket.destroy(new Error('a line that is not a JSON object'));
  });
}
