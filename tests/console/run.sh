#!/usr/bin/env bash
# The web console end to end in headless Chromium (Debian's `chromium`,
# driven by playwright-core) against a real `guidon serve` (a binary built
# beforehand): sign-in, the flag list, search and filter, the environment
# switcher, creating a flag, the switch (confirmed in production), the
# rollout slider, a 422 at its field, a 412 that keeps the edit, a viewer,
# accessible names. playwright-core is the one pinned in
# tests/ofrep-web/package-lock.json, installed there with `npm ci` (shared:
# no second lockfile).
#
# Usage: bash tests/console/run.sh [PATH/TO/guidon] [--screenshots DIR]
#        (default target/debug/guidon; --screenshots docs/ refreshes the README's pictures)
# Environment: CHROMIUM (default /usr/bin/chromium).
# Exit status: 0 when every check passed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
shared="$root/tests/ofrep-web"
guidon="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/guidon}"
shift || true
chromium="${CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$guidon" ]]; then
  echo "console: no guidon binary at $guidon (build it: cargo build -p guidon)" >&2
  exit 1
fi
if [[ ! -x "$chromium" ]]; then
  echo "console: no Chromium at $chromium (apt-get install -y chromium, or set CHROMIUM)" >&2
  exit 1
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "console: $tool is not installed" >&2; exit 1; }
done

stamp="$shared/node_modules/.package-lock.json.ci"
if ! cmp -s "$shared/package-lock.json" "$stamp"; then
  (cd "$shared" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$shared/package-lock.json" "$stamp"
fi

exec node "$here/e2e.mjs" --guidon "$guidon" --chromium "$chromium" "$@"
