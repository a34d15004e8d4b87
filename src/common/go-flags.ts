// Go's `flag` package accepts `-name value`, `-name=value` and `--name`; node:util parseArgs only
// knows `--name`. Operators' unit files and scripts written for Fleetspeak use the single-dash
// form (`fleetspeak-client -config /etc/...`), so the CLIs rewrite it before parsing.

const SINGLE_DASH_FLAG = /^-([A-Za-z][\w.-]*)(=.*)?$/;

/**
 * Rewrites `-name` / `-name=value` to `--name` / `--name=value`, single-letter names included
 * (Go has no short flags: glog's `-v=2` is the flag `v`), except `-h`, which asks for help as in
 * Go. Stops at a bare `--` (what follows is positional). Values such as `-` or `-5` are not flags
 * and stay as they are.
 */
export function goStyleArgs(argv: readonly string[]): string[] {
  const out: string[] = [];
  let positional = false;
  for (const arg of argv) {
    if (positional) {
      out.push(arg);
      continue;
    }
    if (arg === "--") {
      positional = true;
      out.push(arg);
      continue;
    }
    const m = SINGLE_DASH_FLAG.exec(arg);
    // Go's flag package answers -h (like -help) with the usage text.
    if (m && m[1] === "h" && m[2] === undefined) out.push("--help");
    else out.push(m ? `--${m[1]}${m[2] ?? ""}` : arg);
  }
  return out;
}
