#!/usr/bin/env node
// Launcher: runs the compiled entry point dist/cli/fleetspeak-config.js (see launch.js).
import { runCompiled } from "./launch.js";

await runCompiled("fleetspeak-config");
