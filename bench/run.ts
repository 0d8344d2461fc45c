// The benchmark runner: "node dist/bench/run.js NAME" runs bench/NAME.ts (compiled) and prints
// its table. Without a name, or with one that is not a benchmark, it lists them and exits 2.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type BenchModule, formatTable, printTable } from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Modules in bench/ that are not benchmarks: this runner, the shared helpers, and the peer server "api" runs. */
const NOT_BENCHMARKS = new Set(['run', 'lib', 'api-peer']);

/** The compiled benchmarks next to this file (dist/bench/*.js), helpers and "_"-prefixed files excluded. */
export function availableBenchmarks(): string[] {
  return fs.readdirSync(here)
    .filter((f) => f.endsWith('.js') && !f.startsWith('_'))
    .map((f) => f.slice(0, -'.js'.length))
    .filter((name) => !NOT_BENCHMARKS.has(name))
    .sort();
}

function usage(available: string[]): string {
  return ['usage: node dist/bench/run.js NAME [--json]   (npm run bench -- NAME [--json]: one JSON document on stdout)', '', 'benchmarks:',
    ...(available.length ? available.map((n) => `  ${n}`) : ['  (none built; run npm run build)'])].join('\n');
}

async function main(argv: string[]): Promise<number> {
  // No benchmark's vserverd makes bridges or TAPs in the machine's own network namespace: "net"
  // runs its own inside namespaces it makes, with VSERVER_HOST_NETWORKS=1.
  process.env.VSERVER_HOST_NETWORKS = '0';
  const available = availableBenchmarks();
  const json = argv.includes('--json');
  const [name] = argv.filter((a) => a !== '--json');
  if (name === '--help' || name === '-h') {
    console.log(usage(available));
    return 0;
  }
  if (!name || !available.includes(name)) {
    if (name) console.error(`bench: no benchmark named "${name}"`);
    console.error(usage(available));
    return 2;
  }
  const module = (await import(pathToFileURL(path.join(here, `${name}.js`)).href)) as Partial<BenchModule>;
  if (typeof module.run !== 'function') {
    console.error(`bench: ${name}.js does not export run()`);
    return 2;
  }
  const table = await module.run();
  if (!json) {
    printTable(table);
    return 0;
  }
  // stdout holds the one JSON document; the table goes to stderr for whoever watches.
  console.error(formatTable(table));
  if (!table.measures) {
    console.error(`bench: ${name} gives no figures as numbers yet: only its table`);
    return 2;
  }
  console.log(JSON.stringify({ benchmark: name, rows: table.measures }));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (error: unknown) => {
    console.error(`bench: ${(error as Error)?.stack ?? String(error)}`);
    process.exitCode = 1;
  },
);
