// Turns a JavaScript module into a wasm component for a wshost:controller world.
// Usage: node build.mjs SOURCE WIT-DIR WORLD OUTPUT (build.sh runs it).
import { rename, writeFile } from "node:fs/promises";
import { componentize } from "@bytecodealliance/componentize-js";

const [sourcePath, witPath, worldName, output] = process.argv.slice(2);
if (!output) {
  console.error("usage: node build.mjs SOURCE WIT-DIR WORLD OUTPUT");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName,
  // wshost gives controllers no HTTP; stdio (console.* and uncaught errors go to the
  // host's log), clocks and random stay.
  disableFeatures: ["http", "fetch-event"],
});
// Renamed into place in one step, so `wshost run` never hot-reloads a half-written file.
await writeFile(`${output}.tmp`, component);
await rename(`${output}.tmp`, output);
console.error(`wrote ${output} (${component.length} bytes)`);
