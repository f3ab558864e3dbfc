// Turns chat.js into a wasm component targeting the `controller` world of the WIT.
// Usage: node build.mjs SOURCE WIT-DIR OUTPUT (build.sh runs it from target/peers/chat-js,
// where npm installed the pinned componentize-js).
import { rename, writeFile } from "node:fs/promises";
import { componentize } from "@bytecodealliance/componentize-js";

const [sourcePath, witPath, output] = process.argv.slice(2);
if (!output) {
  console.error("usage: node build.mjs SOURCE WIT-DIR OUTPUT");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName: "controller",
  // wshost gives controllers no HTTP; stdio (console.* and uncaught errors go to the
  // host's log), clocks and random stay.
  disableFeatures: ["http", "fetch-event"],
});
// Renamed into place in one step, so `wshost run` never hot-reloads a half-written file.
await writeFile(`${output}.tmp`, component);
await rename(`${output}.tmp`, output);
console.error(`chat-js: wrote ${output} (${component.length} bytes)`);
