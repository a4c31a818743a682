// Build a JavaScript detector into a component of the `detector-plugin` world:
//   node build.mjs SOURCE.js OUT.wasm
// The source imports the helper as './clean-host.js'; it is copied in from
// sdk-js/ beside a copy of the source's folder, since the engine resolves
// imports inside that folder only. The engine gets no WASI features beyond
// what the host grants anyway (none).
import { componentize } from '@bytecodealliance/componentize-js';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [source, out] = process.argv.slice(2);
if (!source || !out) {
  console.error('usage: node build.mjs SOURCE.js OUT.wasm');
  process.exit(2);
}
const root = fileURLToPath(new URL('../..', import.meta.url));
const work = await mkdtemp(join(tmpdir(), 'clean-host-js-'));
try {
  await cp(dirname(source), work, { recursive: true });
  await cp(join(root, 'sdk-js', 'clean-host.js'), join(work, 'clean-host.js'));
  const { component } = await componentize({
    sourcePath: join(work, basename(source)),
    witPath: process.env.CLEAN_HOST_WIT ?? join(root, 'wit'),
    worldName: 'detector-plugin',
    disableFeatures: ['random', 'clocks', 'http', 'fetch-event'],
  });
  await writeFile(out, component);
  console.error(`built ${out} (${(component.length / 1048576).toFixed(1)} MiB)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
