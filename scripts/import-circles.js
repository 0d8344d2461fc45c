#!/usr/bin/env node
// Fails (exit 1) when the TypeScript sources import each other in a circle, and names each circle.
// Type-only imports count too: a circle of types is a circle of ideas, and the next runtime import
// along it makes a load-order bug. Dynamic import() is left out: it runs after loading.
// Usage: node scripts/import-circles.js [folders...] (default: the project's source folders).

import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..');
const folders = process.argv.slice(2).length ? process.argv.slice(2) : ['server', 'bin', 'vmm', 'storage', 'bench', 'test', 'harness'];
const STATIC_IMPORT = /^\s*(?:import|export)\s(?:[^'";]*?\sfrom\s)?\s*['"](\.{1,2}\/[^'"]+)['"]/gm;

function sources(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : sources(full);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [full] : [];
  });
}

/** The .ts file a relative specifier ("./x.js") names, or null when it is not one of ours. */
function resolve(from, specifier) {
  const target = path.resolve(path.dirname(from), specifier);
  for (const candidate of [target.replace(/\.js$/, '.ts'), `${target}.ts`, path.join(target, 'index.ts')]) {
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return candidate;
  }
  return null;
}

const files = folders.flatMap((f) => sources(path.resolve(ROOT, f)));
const edges = new Map(files.map((file) => {
  const text = fs.readFileSync(file, 'utf8');
  const targets = [...text.matchAll(STATIC_IMPORT)].map((m) => resolve(file, m[1])).filter((t) => t !== null);
  return [file, [...new Set(targets)]];
}));

// Tarjan's strongly connected components: each component of more than one file (or a file that imports itself) is a circle.
let counter = 0;
const index = new Map();
const low = new Map();
const stack = [];
const onStack = new Set();
const circles = [];
function visit(file) {
  index.set(file, counter);
  low.set(file, counter++);
  stack.push(file);
  onStack.add(file);
  for (const next of edges.get(file) ?? []) {
    if (!index.has(next)) {
      visit(next);
      low.set(file, Math.min(low.get(file), low.get(next)));
    } else if (onStack.has(next)) {
      low.set(file, Math.min(low.get(file), index.get(next)));
    }
  }
  if (low.get(file) === index.get(file)) {
    const component = [];
    let member;
    do {
      member = stack.pop();
      onStack.delete(member);
      component.push(member);
    } while (member !== file);
    if (component.length > 1 || (edges.get(file) ?? []).includes(file)) circles.push(component);
  }
}
for (const file of edges.keys()) if (!index.has(file)) visit(file);

if (circles.length) {
  console.error(`${circles.length} import circle${circles.length === 1 ? '' : 's'}:`);
  for (const c of circles) console.error(`  ${c.map((f) => path.relative(ROOT, f)).sort().join(', ')}`);
  process.exit(1);
}
console.log(`no import circles among ${files.length} files`);
