// npm run build: bundles src/main.js with esbuild into app.js and copies the
// page, its style sheet and LiteRT.js's Wasm files beside it, in
// keras_solov2/app/web_page/: package data (setup.cfg), so the wheel carries the
// page and `keras-solov2 web` serves it from the installed package (git-ignored).
import { cp, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const page = join(here, '..', 'keras_solov2', 'app', 'web_page');

await rm(page, { recursive: true, force: true });
await mkdir(page, { recursive: true });
await build({
  entryPoints: [join(here, 'src', 'main.js')],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  sourcemap: true,
  outfile: join(page, 'app.js'),
  logLevel: 'warning',
});
await cp(join(here, 'index.html'), join(page, 'index.html'));
await cp(join(here, 'style.css'), join(page, 'style.css'));
await cp(join(here, 'node_modules', '@litertjs', 'core', 'wasm'), join(page, 'wasm'), {
  recursive: true,
});
console.log(`Built ${page}`);
