#!/usr/bin/env bash
# OpenFeature in a browser, end to end: the stock @openfeature/web-sdk with
# @openfeature/ofrep-web-provider, bundled with esbuild, in headless
# Chromium (Debian's `chromium`, driven by playwright-core), against a real
# `guidon serve` (a binary built beforehand) on another origin. e2e.mjs
# starts the server, the page's static servers and the browser, and checks
# resolution, the change pushed through OFREP eventStreams (printing its
# latency), that no definition reaches the page, and CORS refusing another
# origin. The npm packages are pinned in package-lock.json and installed
# with `npm ci` into node_modules/ here (not committed).
#
# Usage: bash tests/ofrep-web/run.sh [PATH/TO/guidon]   (default target/debug/guidon)
# Environment: CHROMIUM (default /usr/bin/chromium).
# Exit status: 0 when every check passed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
guidon="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/guidon}"
chromium="${CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "$guidon" ]]; then
  echo "ofrep-web: no guidon binary at $guidon (build it: cargo build -p guidon)" >&2
  exit 1
fi
if [[ ! -x "$chromium" ]]; then
  echo "ofrep-web: no Chromium at $chromium (apt-get install -y chromium, or set CHROMIUM)" >&2
  exit 1
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "ofrep-web: $tool is not installed" >&2; exit 1; }
done

# node_modules: installed once, again when package-lock.json changes.
stamp="$here/node_modules/.package-lock.json.ci"
if ! cmp -s "$here/package-lock.json" "$stamp"; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$stamp"
fi

exec node "$here/e2e.mjs" --guidon "$guidon" --chromium "$chromium"
