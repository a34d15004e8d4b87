#!/usr/bin/env node
// Launcher: runs the TypeScript entry point through tsx's loader, from any working directory.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/fleetspeak-admin.ts");
