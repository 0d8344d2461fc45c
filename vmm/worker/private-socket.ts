// The worker's sockets are its owner's alone: created with mode 0600 under a umask, so there is
// no moment at which another user could connect. A leftover file from a dead worker is replaced.

import fs from 'node:fs';
import type net from 'node:net';

export async function listenPrivately(server: net.Server, socketPath: string): Promise<void> {
  fs.rmSync(socketPath, { force: true });
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(umask);
  }
}
