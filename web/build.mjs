// npm run build: bundles src/main.js with esbuild into dist/app.js and copies
// the page, its style sheet and LiteRT.js's Wasm files into dist/, the
// folder that `keras-solov2 web` serves.
import { cp, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: [join(here, 'src', 'main.js')],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  sourcemap: true,
  outfile: join(dist, 'app.js'),
  logLevel: 'warning',
});
await cp(join(here, 'index.html'), join(dist, 'index.html'));
await cp(join(here, 'style.css'), join(dist, 'style.css'));
await cp(join(here, 'node_modules', '@litertjs', 'core', 'wasm'), join(dist, 'wasm'), {
  recursive: true,
});
console.log(`Built ${dist}`);
