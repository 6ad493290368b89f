// Bundle scatter.src.js and regl-scatterplot into ../scatter.js (one minified ESM file, no network imports).
// Run: cd odinlab/widgets/js && npm ci && node build.mjs
import { build } from 'esbuild';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const out = fileURLToPath(new URL('../scatter.js', import.meta.url));
await build({
  entryPoints: [fileURLToPath(new URL('./scatter.src.js', import.meta.url))],
  outfile: out,
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['es2020'],
  legalComments: 'eof',
  logLevel: 'warning',
});
console.log(`wrote ${out}: ${statSync(out).size} bytes`);
