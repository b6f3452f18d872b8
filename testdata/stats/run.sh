#!/usr/bin/env bash
# The outside references of crates/guidon-stats, recomputed and checked
# against the committed JSON that the Rust tests read:
#
#   reference.py          scipy and statsmodels  -> reference.json
#   beta_reference.py     scipy's quadrature     -> beta_reference.json
#   gbstats_reference.py  GrowthBook's gbstats   -> gbstats_reference.json
#
# Each runs with --check: it recomputes every figure and fails, naming each
# one, when the committed file differs by more than 1e-9 relative (see
# refcheck.py). The packages come from PyPI, every one pinned in
# requirements.txt, installed as wheels in a virtualenv under target/ (not
# committed), made once and topped up when requirements.txt changes.
#
# Usage: bash testdata/stats/run.sh
# Exit status: 0 when the three committed files are current.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${STATS_VENV:-${CARGO_TARGET_DIR:-$root/target}/stats-venv}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
  echo "stats: creating virtualenv $venv"
  "$python" -m venv "$venv" || {
    echo "stats: '$python -m venv' failed (the venv module is needed)" >&2
    exit 1
  }
fi
stamp="$venv/.requirements.txt"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  # Wheels only: a missing wheel fails here rather than compiling scipy.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --only-binary=:all: -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi
echo "stats: $("$venv/bin/python" -c \
  'import importlib.metadata as m, sys; print(", ".join(["python " + sys.version.split()[0]] + [f"{p} {m.version(p)}" for p in ("numpy", "scipy", "statsmodels", "gbstats")]))')"

status=0
for script in reference.py beta_reference.py gbstats_reference.py; do
  "$venv/bin/python" "$here/$script" --check || status=1
done
if [[ $status -ne 0 ]]; then
  echo "stats: a committed reference file is stale (above); regenerate it with $venv/bin/python" >&2
fi
exit "$status"
