// `npm run package:deb`: out/fleetspeak-server_<version>_amd64.deb and
// out/fleetspeak-client_<version>_amd64.deb, built with dpkg-deb, laid out like Fleetspeak's own
// packages (fleetspeak/server-pkg-tmpl and client-pkg-tmpl in google/fleetspeak):
//
// fleetspeak-server: /usr/bin/fleetspeak-{server,config,admin}; /usr/lib/fleetspeak-server/ with
//   the compiled dist/, the production node_modules and the node binary that built them (Debian 12
//   ships Node.js 18, and better-sqlite3's compiled addon must match the node that loads it, so
//   the package brings its own: docs/install.md); the systemd unit of deploy/systemd/; the
//   `fleetspeak` system user (postinst); /etc/fleetspeak-server/ with the example configurator and
//   services configs as conffiles; /var/lib/fleetspeak-server/ for the SQLite database.
// fleetspeak-client: /usr/bin/fleetspeak-client, the single executable of `npm run
//   package:client` (no Node.js needed); its unit; /etc/fleetspeak-client/ with communicator.txt,
//   textservices/ and services/.
//
//   node scripts/package-deb.mjs [--out DIR] [--client-exe FILE] [--compression xz|gzip]
// --client-exe takes an executable made by package-client.mjs instead of making one;
// --compression gzip packs ~4× faster into ~30% larger files than xz (the default), for tests.
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { stripDebugSymbols } from "./build-tools.mjs";

const ROOT = resolve(import.meta.dirname, "..");
const { values } = parseArgs({
  options: {
    out: { type: "string", default: join(ROOT, "out") },
    "client-exe": { type: "string" },
    compression: { type: "string", default: "xz" },
  },
});
const OUT = resolve(values.out);
if (!["xz", "gzip"].includes(values.compression)) {
  console.error(`package-deb: --compression is xz or gzip, not ${values.compression}`);
  process.exit(1);
}
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const VERSION = pkg.version;
// Debian's tools take the maintainer from DEBFULLNAME and DEBEMAIL; so does this script.
const MAINTAINER = `${process.env.DEBFULLNAME ?? "fleetspeak-ts maintainers"} <${process.env.DEBEMAIL ?? "fleetspeak-ts@example.org"}>`;
const HOMEPAGE = "https://github.com/google/fleetspeak";
/** What the node binary links against (objdump -T /usr/bin/node: GLIBC_2.28, GLIBCXX_3.4.21). */
const NODE_DEPENDS = "libc6 (>= 2.28), libgcc-s1 (>= 3.0), libstdc++6 (>= 5)";
const UNITS = "lib/systemd/system";

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], ...opts });
}

function need(tool, hint) {
  try {
    run("sh", ["-c", `command -v ${tool}`]);
  } catch {
    console.error(`package-deb: ${tool} is missing; ${hint}`);
    process.exit(1);
  }
}

function write(root, path, text, mode = 0o644) {
  const file = join(root, path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  chmodSync(file, mode);
}

/** A maintainer script (DEBIAN/postinst, prerm, postrm): POSIX sh, stopping at the first error. */
function maintainerScript(root, name, body) {
  write(root, `DEBIAN/${name}`, `#!/bin/sh\nset -e\n${body}`, 0o755);
}

function copy(root, path, from, mode = 0o644) {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  copyFileSync(from, join(root, path));
  chmodSync(join(root, path), mode);
}

/** Every directory 0755 and every file 0644 or 0755 (executable bit kept), as dpkg expects. */
function normalizeModes(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) {
      chmodSync(path, 0o755);
      normalizeModes(path);
    } else if (e.isFile()) {
      chmodSync(path, statSync(path).mode & 0o111 ? 0o755 : 0o644);
    }
  }
}

function installedSizeKiB(dir) {
  return Number(run("du", ["-sk", "--exclude=DEBIAN", dir]).split("\t")[0]);
}

function docs(root, name) {
  write(
    root,
    `usr/share/doc/${name}/copyright`,
    `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ${pkg.name}
Source: ${HOMEPAGE}

Files: *
Copyright: ${new Date().getUTCFullYear()} fleetspeak-ts authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
`,
  );
  const date = new Date().toUTCString().replace("GMT", "+0000");
  const changelog = `${name} (${VERSION}) unstable; urgency=medium\n\n  * Release ${VERSION}.\n\n -- ${MAINTAINER}  ${date}\n`;
  mkdirSync(join(root, `usr/share/doc/${name}`), { recursive: true });
  // A native package (no Debian revision in its version): changelog.gz, not changelog.Debian.gz.
  writeFileSync(join(root, `usr/share/doc/${name}/changelog.gz`), gzipSync(changelog, { level: 9 }));
}

/**
 * Lintian findings that come with shipping Node.js itself, explained in the package: the node
 * binary links zlib statically and is built without PIE by its packagers.
 */
function lintianOverrides(root, name, nodePath) {
  write(
    root,
    `usr/share/lintian/overrides/${name}`,
    `# Node.js links its own zlib (and ships in this package: see docs/install.md).
${name}: embedded-library zlib [${nodePath}]
# The node binary as Node.js's packagers build it.
${name}: hardening-no-pie [${nodePath}]
`,
  );
}

/** The same systemd handling as debhelper's snippets (deb-systemd-helper, deb-systemd-invoke). */
function unitScripts(root, unit, startWhen) {
  const postinst = `if [ "$1" = configure ] || [ "$1" = abort-upgrade ]; then
  if command -v deb-systemd-helper >/dev/null; then
    deb-systemd-helper enable ${unit} >/dev/null || true
  fi
  if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    # Started once ${startWhen} is there.
    if [ -e ${startWhen} ]; then
      deb-systemd-invoke restart ${unit} >/dev/null || true
    fi
  fi
fi
`;
  maintainerScript(
    root,
    "prerm",
    `if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  deb-systemd-invoke stop ${unit} >/dev/null || true
fi
`,
  );
  return {
    postinst,
    postrm: `if [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
if command -v deb-systemd-helper >/dev/null; then
  if [ "$1" = remove ]; then deb-systemd-helper mask ${unit} >/dev/null || true; fi
  if [ "$1" = purge ]; then
    deb-systemd-helper purge ${unit} >/dev/null || true
    deb-systemd-helper unmask ${unit} >/dev/null || true
  fi
fi
`,
  };
}

function control(root, fields, description) {
  const lines = Object.entries({ ...fields, "Installed-Size": installedSizeKiB(root) }).map(([k, v]) => `${k}: ${v}`);
  write(root, "DEBIAN/control", `${lines.join("\n")}\nDescription: ${description}\n`);
}

function build(root, name) {
  const deb = join(OUT, `${name}_${VERSION}_amd64.deb`);
  rmSync(deb, { force: true });
  run("dpkg-deb", ["--root-owner-group", `-Z${values.compression}`, "--build", root, deb], { stdio: ["ignore", "ignore", "inherit"] });
  console.log(`package-deb: ${deb} (${(statSync(deb).size / 1024 / 1024).toFixed(1)} MiB)`);
}

/**
 * What a production dependency needs at run time: not its tests, docs, examples, type
 * declarations, dotfiles or (for better-sqlite3) its C sources and build tree.
 */
function runtimeFile(path) {
  const name = path.split("/").pop();
  if (name.startsWith(".") || /\.(md|markdown|html|d\.[cm]?ts|map)$/i.test(name)) return false;
  if (/\/node_modules\/[^/]+(\/[^/]+)*\/(test|tests|__tests__|docs?|examples?|benchmarks?)(\/|$)/.test(path)) return false;
  return !/better-sqlite3\/(deps|src|build\/(?!Release(\/better_sqlite3\.node)?$))/.test(path);
}

/** Files of node_modules are data to node: 0644 all, the native addon too. */
function dropExecutableBits(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) dropExecutableBits(path);
    else if (e.isFile()) chmodSync(path, 0o644);
  }
}

/** The directories of the production dependencies under node_modules (npm's flat layout). */
function productionModules() {
  return run("npm", ["ls", "--omit=dev", "--all", "--parseable"])
    .split("\n")
    .map((p) => relative(join(ROOT, "node_modules"), p))
    .filter((p) => p !== "" && !p.startsWith(".."));
}

// ------------------------------------------------------------------ the server package
function serverPackage() {
  const root = join(OUT, "deb/fleetspeak-server");
  const lib = "usr/lib/fleetspeak-server";
  rmSync(root, { recursive: true, force: true });
  cpSync(join(ROOT, "dist"), join(root, lib, "dist"), { recursive: true });
  write(root, `${lib}/package.json`, `${JSON.stringify({ name: pkg.name, version: VERSION, type: "module", private: true }, null, 2)}\n`);
  copy(root, `${lib}/node`, process.execPath, 0o755);
  stripDebugSymbols(join(root, lib, "node"));
  for (const dir of productionModules()) {
    if (dir.startsWith("@types/")) continue;
    cpSync(join(ROOT, "node_modules", dir), join(root, lib, "node_modules", dir), { recursive: true, filter: runtimeFile });
  }
  stripDebugSymbols(join(root, lib, "node_modules/better-sqlite3/build/Release/better_sqlite3.node"));
  for (const bin of ["fleetspeak-server", "fleetspeak-config", "fleetspeak-admin"]) {
    write(root, `usr/bin/${bin}`, `#!/bin/sh\nexec /${lib}/node /${lib}/dist/cli/${bin}.js "$@"\n`, 0o755);
  }
  copy(root, `${UNITS}/fleetspeak-server.service`, join(ROOT, "deploy/systemd/fleetspeak-server.service"));
  const conffiles = ["configurator.config", "server.services.config"];
  for (const f of conffiles) copy(root, `etc/fleetspeak-server/${f}`, join(ROOT, "deploy/examples", f));
  mkdirSync(join(root, "var/lib/fleetspeak-server"), { recursive: true });
  docs(root, "fleetspeak-server");
  for (const [from, to] of [["examples", "configs"], ["haproxy", "haproxy"], ["grafana", "grafana"]]) {
    cpSync(join(ROOT, "deploy", from), join(root, "usr/share/doc/fleetspeak-server/examples", to), { recursive: true });
  }
  lintianOverrides(root, "fleetspeak-server", `${lib}/node`);
  normalizeModes(root);
  dropExecutableBits(join(root, lib, "node_modules"));
  const systemd = unitScripts(root, "fleetspeak-server.service", "/etc/fleetspeak-server/server.components.config");

  write(root, "DEBIAN/conffiles", conffiles.map((f) => `/etc/fleetspeak-server/${f}\n`).join(""));
  maintainerScript(
    root,
    "postinst",
    `if [ "$1" = configure ]; then
  if ! getent passwd fleetspeak >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/fleetspeak-server --no-create-home --shell /usr/sbin/nologin fleetspeak
  fi
  # The components config holds the server's private key; the configurator writes it here as
  # the fleetspeak user.
  chown fleetspeak:fleetspeak /etc/fleetspeak-server /var/lib/fleetspeak-server
  chmod 0750 /etc/fleetspeak-server /var/lib/fleetspeak-server
  chgrp fleetspeak /etc/fleetspeak-server/configurator.config /etc/fleetspeak-server/server.services.config
  chmod 0640 /etc/fleetspeak-server/configurator.config /etc/fleetspeak-server/server.services.config
fi
${systemd.postinst}`,
  );
  maintainerScript(
    root,
    "postrm",
    `${systemd.postrm}# The database and the certificates the configurator made stay on purge unless nothing else is
# there: deleting a deployment's CA or its messages is the operator's decision.
if [ "$1" = purge ]; then
  rmdir /var/lib/fleetspeak-server 2>/dev/null || true
  rmdir /etc/fleetspeak-server 2>/dev/null || true
fi
`,
  );
  control(
    root,
    {
      Package: "fleetspeak-server",
      Version: VERSION,
      Architecture: "amd64",
      Maintainer: MAINTAINER,
      Section: "net",
      Priority: "optional",
      Depends: `passwd, ${NODE_DEPENDS}`,
      Homepage: HOMEPAGE,
    },
    `server for the Fleetspeak communications framework (TypeScript)
 A drop-in replacement for Fleetspeak's server: the frontend holding clients'
 streaming connections and the admin gRPC API that GRR calls, on SQLite or
 MySQL/MariaDB, with fleetspeak-config and fleetspeak-admin. It runs on its own
 copy of Node.js, in /usr/lib/fleetspeak-server.`,
  );
  build(root, "fleetspeak-server");
}

// ------------------------------------------------------------------ the client package
function clientPackage(exe) {
  const root = join(OUT, "deb/fleetspeak-client");
  rmSync(root, { recursive: true, force: true });
  copy(root, "usr/bin/fleetspeak-client", exe, 0o755);
  copy(root, `${UNITS}/fleetspeak-client.service`, join(ROOT, "deploy/systemd/fleetspeak-client.service"));
  write(
    root,
    "etc/fleetspeak-client/communicator.txt",
    `# A text-format fleetspeak.client.CommunicatorConfig: how often the client polls and retries.
# Empty, the defaults apply. For example, while debugging:
#
# max_poll_delay_seconds: 10
# max_buffer_delay_seconds: 1
# min_failure_delay_seconds: 10
`,
  );
  // Service configs: text ones (textservices/, as GRR's installers write them) and signed ones.
  mkdirSync(join(root, "etc/fleetspeak-client/textservices"), { recursive: true });
  mkdirSync(join(root, "etc/fleetspeak-client/services"), { recursive: true });
  docs(root, "fleetspeak-client");
  lintianOverrides(root, "fleetspeak-client", "usr/bin/fleetspeak-client");
  normalizeModes(root);
  const systemd = unitScripts(root, "fleetspeak-client.service", "/etc/fleetspeak-client/client.config");

  write(root, "DEBIAN/conffiles", "/etc/fleetspeak-client/communicator.txt\n");
  maintainerScript(root, "postinst", systemd.postinst);
  maintainerScript(
    root,
    "postrm",
    `${systemd.postrm}# Purging forgets the client's identity (its key, in the state file).
if [ "$1" = purge ]; then
  rm -f /var/lib/misc/fleetspeak-client.state
fi
`,
  );
  control(
    root,
    {
      Package: "fleetspeak-client",
      Version: VERSION,
      Architecture: "amd64",
      Maintainer: MAINTAINER,
      Section: "net",
      Priority: "optional",
      Depends: NODE_DEPENDS,
      Homepage: HOMEPAGE,
    },
    `client for the Fleetspeak communications framework (TypeScript)
 A drop-in replacement for Fleetspeak's client: it connects to the Fleetspeak
 servers named in /etc/fleetspeak-client/client.config and runs the services
 configured in /etc/fleetspeak-client/textservices/, such as GRR's agent. One
 self-contained executable: no Node.js needed.`,
  );
  build(root, "fleetspeak-client");
}

if (process.platform !== "linux" || process.arch !== "x64") {
  console.error(`package-deb: builds amd64 packages from this machine's node; this is ${process.platform}-${process.arch}`);
  process.exit(1);
}
need("dpkg-deb", "run this on Debian or Ubuntu (apt-get install dpkg)");
mkdirSync(OUT, { recursive: true });
run(process.execPath, [join(ROOT, "scripts/build.mjs")], { stdio: ["ignore", "inherit", "inherit"] });
let exe = values["client-exe"];
if (!exe) {
  run(process.execPath, [join(ROOT, "scripts/package-client.mjs"), "--out", OUT], { stdio: ["ignore", "inherit", "inherit"] });
  exe = join(OUT, "fleetspeak-client");
}
if (!existsSync(exe)) {
  console.error(`package-deb: the client executable ${exe} does not exist; run npm run package:client`);
  process.exit(1);
}
serverPackage();
clientPackage(resolve(exe));
rmSync(join(OUT, "deb"), { recursive: true, force: true });
