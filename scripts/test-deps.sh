#!/usr/bin/env bash
# Makes this machine ready for the tests; `npm test` runs it first (pretest), and so does .ci/run.
#   - the Debian packages of scripts/test-packages.txt, installed when missing;
#   - MariaDB answering on 127.0.0.1:3306 as root with an empty password, started when down
#     (skipped when FLEETSPEAK_TEST_MYSQL_DSN points the tests at another server);
#   - the real Fleetspeak (Go) in ${FLEETSPEAK_GO_DIR:-/tmp/fleetspeak-go} for the compatibility
#     tests, built by the workplace's shared/fleetspeak-go/build.sh when missing.
# When everything is there it only looks (a few milliseconds). What it cannot do itself (not root,
# no apt-get) stops it at once with one line naming what is missing and the command that fixes it.
#
#   scripts/test-deps.sh                  all of the above
#   scripts/test-deps.sh fleetspeak-go    only the Go build (test/support/fleetspeak-go.ts calls this)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GO_DIR=${FLEETSPEAK_GO_DIR:-/tmp/fleetspeak-go}
GO_BINARIES=(fleetspeak_server fleetspeak_client fleetspeak_config fleetspeak_admin)

say() { echo "test-deps: $*" >&2; }
stop() {
  echo "test-deps: $*" >&2
  exit 1
}
is_root() { [ "$(id -u)" = 0 ]; }

# ------------------------------------------------------------------ Debian packages
wanted_packages() { sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$ROOT/scripts/test-packages.txt"; }

missing_packages() {
  local installed
  installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $(wanted_packages) 2>/dev/null | awk '$1 == "ii" { print $2 }' || true)
  wanted_packages | grep -vxF -f <(printf '%s\n' "$installed") || true
}

install_packages() {
  say "installing $*"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
}

# ------------------------------------------------------------------ MariaDB
# The tests connect exactly so (test/support/mariadb.ts): TCP, 127.0.0.1:3306, root, no password.
mariadb_error() {
  command -v mariadb >/dev/null || {
    echo "no mariadb client"
    return
  }
  mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P3306 -uroot --connect-timeout=3 -N -e 'SELECT 1' 2>&1 >/dev/null | head -1 || true
}

start_mariadb() {
  say "starting MariaDB"
  install -d -o mysql -g mysql /run/mysqld
  # A data directory made here lets root in over TCP without a password, as the tests expect.
  [ -d /var/lib/mysql/mysql ] ||
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --auth-root-authentication-method=normal >/dev/null
  if [ -d /run/systemd/system ]; then
    systemctl start mariadb
  else
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  fi
  for _ in $(seq 1 60); do
    mariadb-admin --silent ping >/dev/null 2>&1 && return
    sleep 1
  done
  stop "MariaDB did not start within 60 s; see its log (journalctl -u mariadb, or /var/lib/mysql/*.err)"
}

# Debian's package creates root with socket authentication only; a server this script has just
# installed is a test server, so root may also log in over TCP with an empty password.
open_root_login() {
  say "letting root log in over TCP without a password (a freshly installed test server)"
  mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
    CREATE USER IF NOT EXISTS root@'127.0.0.1' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;"
}

# ------------------------------------------------------------------ the real Fleetspeak (Go)
go_built() {
  for b in "${GO_BINARIES[@]}"; do [ -x "$GO_DIR/bin/$b" ] || return 1; done
  [ -d "$GO_DIR/grr/fleetspeak" ]
}

# The build script lives beside the checkout, in the workplace's shared folder (not in the repository).
go_build_script() {
  local d
  for d in "${FLEETSPEAK_GO_SRC:-}" "$ROOT/../shared/fleetspeak-go" /work/shared/fleetspeak-go; do
    if [ -n "$d" ] && [ -f "$d/build.sh" ]; then
      echo "$d/build.sh"
      return
    fi
  done
}

# How to get the Go build, for the one line printed when this script cannot make it.
go_build_hint() {
  local script
  script=$(go_build_script)
  if [ -n "$script" ]; then
    echo "sudo $script"
  else
    echo "set FLEETSPEAK_GO_SRC to the folder holding build.sh and fleetspeak-src.tar.gz (looked in ../shared/fleetspeak-go)"
  fi
}

build_fleetspeak_go() {
  local script
  script=$(go_build_script)
  [ -n "$script" ] || stop "the real Fleetspeak (Go) is not built in $GO_DIR; $(go_build_hint)"
  # Test files starting together wait here for one build instead of running several.
  exec 9>"$GO_DIR.lock"
  flock 9
  if ! go_built; then
    say "building the real Fleetspeak (Go) into $GO_DIR with $script (a few minutes the first time)"
    FLEETSPEAK_GO_DIR="$GO_DIR" bash "$script" >&2
    go_built || stop "$script finished but $GO_DIR lacks ${GO_BINARIES[*]} or grr/fleetspeak"
  fi
  exec 9>&-
}

if [ "${1:-}" = fleetspeak-go ]; then
  go_built && exit 0
  is_root || stop "the real Fleetspeak (Go) is not built in $GO_DIR; build it with: $(go_build_hint)"
  build_fleetspeak_go
  exit 0
fi
[ $# -eq 0 ] || stop "unknown argument $1; usage: scripts/test-deps.sh [fleetspeak-go]"

# ------------------------------------------------------------------ look first, then act
command -v dpkg-query >/dev/null ||
  stop "this is not a Debian machine (no dpkg-query); install the equivalents of $(wanted_packages | tr '\n' ' ')and start MariaDB on 127.0.0.1:3306 (root, no password), then run: node scripts/run-tests.mjs"
mapfile -t missing < <(missing_packages)
check_db=yes
[ -z "${FLEETSPEAK_TEST_MYSQL_DSN:-}" ] || check_db=no
db_error=""
[ "$check_db" = no ] || db_error=$(mariadb_error)

if [ ${#missing[@]} -eq 0 ] && [ -z "$db_error" ] && go_built; then exit 0; fi

if ! is_root || ! command -v apt-get >/dev/null; then
  todo=()
  [ ${#missing[@]} -eq 0 ] || todo+=("Debian packages ${missing[*]} (sudo apt-get install -y ${missing[*]})")
  [ -z "$db_error" ] || todo+=("MariaDB on 127.0.0.1:3306 as root without password: $db_error (sudo service mariadb start)")
  go_built || todo+=("the real Fleetspeak (Go) in $GO_DIR ($(go_build_hint))")
  if is_root; then
    stop "missing, and no apt-get here to install it: $(printf '%s; ' "${todo[@]}")"
  fi
  stop "missing: $(printf '%s; ' "${todo[@]}")or all at once: sudo scripts/test-deps.sh"
fi

fresh_mariadb=no
if [ ${#missing[@]} -gt 0 ]; then
  printf '%s\n' "${missing[@]}" | grep -qx mariadb-server && fresh_mariadb=yes
  install_packages "${missing[@]}"
fi
if [ "$check_db" = yes ]; then
  mariadb-admin --silent ping >/dev/null 2>&1 || start_mariadb
  db_error=$(mariadb_error)
  if [ -n "$db_error" ] && [ "$fresh_mariadb" = yes ]; then
    open_root_login
    db_error=$(mariadb_error)
  fi
  [ -z "$db_error" ] ||
    stop "MariaDB runs but the tests cannot log in as root over TCP without a password ($db_error); allow it: mariadb -e \"ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')\", or point the tests elsewhere with FLEETSPEAK_TEST_MYSQL_DSN"
fi
go_built || build_fleetspeak_go
say "ready"
