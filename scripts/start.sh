#!/usr/bin/env bash
# What `npm start` runs: installs what the service needs (setup.sh start), compiles only when a
# source is newer than the last build, then becomes vserverd (exec), so that the pid it prints
# is the one to signal: SIGTERM or SIGINT there applies each running VM's action on quit.
# Arguments go to vserverd: npm start -- --port 9000
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

bash scripts/setup.sh start

# What dist/ is compiled from: the folders tsconfig.json includes, the compiler's settings, and
# the installed packages (their types). A folder's own time changes when a file in it is added,
# removed or renamed, which a file's time does not show.
stamp=dist/.start-build-stamp
folders=$(grep -o '"[A-Za-z0-9_-]*/\*\*/\*\.ts"' tsconfig.json | cut -d/ -f1 | tr -d '"' | sort -u)
stale() {
  [ -f "$stamp" ] || return 0
  [ -n "$(find tsconfig.json package.json node_modules/.package-lock.json -newer "$stamp" 2>/dev/null)" ] && return 0
  # shellcheck disable=SC2086
  [ -n "$(find $folders \( -name '*.ts' -o -type d \) -newer "$stamp" -print -quit 2>/dev/null)" ]
}
if stale; then
  echo "start: compiling (sources changed since the last build)" >&2
  # The stamp takes the time the build began: a file saved during it is compiled next time.
  mkdir -p dist
  touch "$stamp.new"
  npm run --silent build
  mv "$stamp.new" "$stamp"
fi

exec node dist/server/main.js "$@"
