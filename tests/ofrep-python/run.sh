#!/usr/bin/env bash
# OpenFeature end-to-end: starts `guidon serve` (a binary built beforehand)
# on a free port with a throwaway SQLite database, and runs e2e.py, which
# resolves flags through the stock OpenFeature Python SDK and OFREP provider
# from PyPI, then schema.py, which validates every OFREP response shape (and
# an event of the OFREP event stream) against the OFREP spec vendored in
# testdata/ofrep/, after checking the validator itself (--self-test). All
# from PyPI, pinned in requirements.txt, installed in a virtualenv under
# target/, which is not committed.
#
# Usage: bash tests/ofrep-python/run.sh [PATH/TO/guidon]   (default target/debug/guidon)
# Exit status: 0 when e2e.py and schema.py both passed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
guidon="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/guidon}"
venv="${OFREP_VENV:-${CARGO_TARGET_DIR:-$root/target}/ofrep-venv}"
python="${PYTHON:-python3}"

if [[ ! -x "$guidon" ]]; then
  echo "ofrep-python: no guidon binary at $guidon (build it: cargo build -p guidon)" >&2
  exit 1
fi

# The virtualenv: made once, topped up when requirements.txt changes.
if [[ ! -x "$venv/bin/python" ]]; then
  echo "ofrep-python: creating virtualenv $venv"
  "$python" -m venv "$venv" || {
    echo "ofrep-python: '$python -m venv' failed (the venv module is needed)" >&2
    exit 1
  }
fi
stamp="$venv/.requirements.txt"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_log() {
  echo "---- guidon serve output ----" >&2
  cat "$tmp/server.log" >&2 || true
  echo "-----------------------------" >&2
}

# Port 0: the kernel picks a free port, and the server prints the address
# it bound ("guidon: listening on http://ADDR"); no race with another
# process grabbing a port we guessed.
admin_token="e2e-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
GUIDON_ADMIN_TOKEN="$admin_token" GUIDON_LOG=warn \
  "$guidon" serve --listen 127.0.0.1:0 --database-url "sqlite://$tmp/guidon.db" \
  >"$tmp/server.log" 2>&1 &
server_pid=$!

url=""
for _ in $(seq 1 300); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "ofrep-python: guidon serve exited before listening" >&2
    show_log
    exit 1
  fi
  url="$(sed -n 's#^guidon: listening on \(http://[^ ]*\)$#\1#p' "$tmp/server.log" | head -n1)"
  if [[ -n "$url" ]] && "$venv/bin/python" - "$url/healthz" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
  then
    break
  fi
  url=""
  sleep 0.1
done
if [[ -z "$url" ]]; then
  echo "ofrep-python: guidon serve did not answer /healthz within 30 s" >&2
  show_log
  exit 1
fi
echo "ofrep-python: guidon serve is up at $url ($("$venv/bin/python" -c \
  'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ("openfeature-sdk", "openfeature-provider-ofrep")))'))"

status=0
"$venv/bin/python" "$here/e2e.py" --server "$url" --admin-token "$admin_token" || status=$?
"$venv/bin/python" "$here/schema.py" --self-test || status=1
"$venv/bin/python" "$here/schema.py" --server "$url" --admin-token "$admin_token" || status=1
if [[ $status -ne 0 ]]; then
  show_log
fi
exit "$status"
