// `npm run cluster-test -- ARGS`: runs the harness (harness/main.ts) and exits with its status.
import { runClusterTest } from './main.js';

// exit() so that no handle left by a failed run keeps the process alive.
process.exit(await runClusterTest(process.argv.slice(2)));
