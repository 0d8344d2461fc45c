// Output helpers shared by vsctl's commands: byte sizes, the progress bar, and usage errors.

export class UsageError extends Error {}

const UNITS: Record<string, number> = { '': 1, B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** "127G", "512M", "1T", "4096" (bytes); K, M, G, T are binary units (KiB, MiB, GiB, TiB). */
export function parseSize(text: string, option: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([BKMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!match) throw new UsageError(`${option}: "${text}" is not a size; use a number with M, G or T (for example 127G)`);
  const bytes = Math.round(Number(match[1]) * UNITS[match[2].toUpperCase()]);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new UsageError(`${option}: "${text}" is not a positive size`);
  return bytes;
}

export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatSize(bytes: number): string {
  return bytes < 1024 ? `${bytes} bytes` : `${formatBytes(bytes)} (${bytes} bytes)`;
}

const inBytes = (done: number, total: number): string => `${formatBytes(done)} of ${formatBytes(total)}`;

/**
 * A progress bar on stderr, drawn only on a terminal and at most ten times a second. `detail`
 * says what follows the percentage (bytes done of the total unless told otherwise).
 */
export function progressBar(label: string, enabled: boolean, detail: (done: number, total: number) => string = inBytes): { update(done: number, total: number): void; end(): void } {
  const active = enabled && process.stderr.isTTY === true;
  let last = 0;
  let drawn = false;
  const draw = (done: number, total: number): void => {
    const fraction = total > 0 ? Math.min(1, done / total) : 1;
    const width = Math.max(10, Math.min(40, (process.stderr.columns ?? 80) - label.length - 40));
    const filled = Math.round(fraction * width);
    const bar = '#'.repeat(filled) + '.'.repeat(width - filled);
    process.stderr.write(`\r${label} [${bar}] ${(fraction * 100).toFixed(0).padStart(3)}%  ${detail(done, total)}\x1b[K`);
    drawn = true;
  };
  return {
    update(done, total) {
      if (!active) return;
      const now = Date.now();
      if (now - last < 100 && done < total) return;
      last = now;
      draw(done, total);
    },
    end() {
      if (drawn) process.stderr.write('\n');
    },
  };
}

/** Prints "key: value" rows with the values aligned. */
export function printRows(rows: Array<[string, string]>): void {
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  for (const [key, value] of rows) console.log(`${`${key}:`.padEnd(width)}${value}`);
}
