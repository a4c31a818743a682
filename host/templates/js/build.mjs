// node build.mjs OUT.wasm: {{name}}.js (with clean-host.js beside it) into a
// component of the `detector-plugin` world in wit/.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const out = process.argv[2] ?? '{{name}}.wasm';
const { component } = await componentize({
  sourcePath: '{{name}}.js',
  witPath: 'wit',
  worldName: 'detector-plugin',
  disableFeatures: ['random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
console.error(`built ${out}`);
