#!/usr/bin/env -S node --max-semi-space-size=1 --optimize-for-size --lite-mode
// Launcher for fleetspeak-client: runs the client compiled into one file,
// dist/fleetspeak-client.bundle.mjs (see launch.js and scripts/build.mjs). Machines without
// Node.js run the single executable instead (`npm run package:client`, docs/client.md).
//
// The shebang's V8 flags trade CPU for memory, as suits an agent that idles on every machine of a
// fleet: a 1 MiB young generation and --optimize-for-size keep ~35 MiB of heap growth away under
// a steady message flow, and --lite-mode (no optimizing compiler) saves ~7 MiB more at about
// twice the CPU per message (still ~6,000 msgs/s from one daemon; bench/client.ts measures it).
// `node bin/fleetspeak-client.js` skips the shebang: give node the same flags there.
import { runCompiled } from "./launch.js";

await runCompiled("fleetspeak-client", "fleetspeak-client.bundle.mjs");
