#!/usr/bin/env bash
# Runs the README's "Running nodes" recipe exactly as written, so it keeps working: the first
# ```sh block under that heading is run by bash (-e: any failing line fails the run) in a new
# temporary directory holding a copy of deploy/, against the ferry and ferryd in BIN_DIR
# (default target/debug). After each line that starts a ferryd in the background it waits,
# as a person would, until that node's admin port answers. The nodes are stopped at the end,
# on failure and on timeout (TIMEOUT seconds, default 300).
#
#   deploy/try-recipe.sh [BIN_DIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$repo/target/debug}" && pwd)
for b in ferry ferryd; do
  [[ -x "$bin/$b" ]] || { echo "try-recipe: no $bin/$b; build it: cargo build -p ferry-client -p ferry-daemon" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-recipe.XXXXXX")
keep=${KEEP:-}
cleanup() { [[ -n "$keep" ]] && echo "try-recipe: kept $work" || rm -rf "$work"; }
trap cleanup EXIT
cp -r "$repo/deploy" "$work/deploy"

# The recipe: the first ```sh block after "## Running nodes".
awk '/^## Running nodes/ { section = 1; next }
     section && /^## / { exit }
     section && !inblock && /^```sh/ { inblock = 1; next }
     inblock && /^```/ { exit }
     inblock { print }' "$repo/README.md" >"$work/recipe.sh"
[[ -s "$work/recipe.sh" ]] || { echo "try-recipe: no sh block under '## Running nodes' in README.md" >&2; exit 2; }

# The script bash runs: the recipe, with a wait after each background ferryd.
{
  cat <<'PRELUDE'
set -euo pipefail
stop_nodes() { local p; for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done; wait || true; }
trap stop_nodes EXIT
trap 'echo "try-recipe: timed out" >&2; exit 124' TERM INT
wait_listening() { # CONFIG PID: until its admin-listen port accepts a connection (30 s)
  { set +x; } 2>/dev/null
  local addr host port i
  addr=$(sed -n 's/^admin-listen *= *"\([^"]*\)".*/\1/p' "$1")
  host=${addr%:*} port=${addr##*:}
  for i in $(seq 300); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then set -x; return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "try-recipe: the node of $1 exited" >&2; return 1; }
    sleep 0.1
  done
  echo "try-recipe: the node of $1 did not listen on $addr within 30 s" >&2
  return 1
}
PRELUDE
  awk '{ print }
       /^ferryd .*&/ { match($0, /--config +[^ ]+/); cfg = substr($0, RSTART, RLENGTH); sub(/--config +/, "", cfg);
                      print "wait_listening " cfg " $!" }' "$work/recipe.sh"
} >"$work/run.sh"

echo "try-recipe: running the README's recipe in $work with $bin"
cd "$work"
status=0
PATH="$bin:$PATH" timeout "${TIMEOUT:-300}" bash -x "$work/run.sh" || status=$?
if [[ $status -ne 0 ]]; then
  echo "try-recipe: FAILED (exit $status); node logs:" >&2
  for log in "$work"/*.log; do [[ -f "$log" ]] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }; done
  exit "$status"
fi
echo "try-recipe: the README's recipe ran as written"
