"""Writing and checking the committed reference files of testdata/stats/.

Each generator script builds its reference values as a JSON-ready object
and hands it to `finish(out, path)`:

    python3 SCRIPT.py            # writes the JSON to standard output
    python3 SCRIPT.py --check    # recomputes and compares with the committed file

`--check` (what .ci/run does, through testdata/stats/run.sh) fails with
exit status 1, naming every figure that moved, when the committed file is not
what the script computes now: every number within REL_TOL relative (or
ABS_TOL absolute, for figures that are zero up to rounding), every string,
boolean, null and the shape exactly. Only `generated_with` (the versions of
Python and of the packages) is not compared; it is printed, so a changed
environment can be seen.
"""

import json
import math
import os
import sys

REL_TOL = 1e-9
ABS_TOL = 1e-15


def _differences(committed, fresh, path, out):
    if isinstance(committed, dict) and isinstance(fresh, dict):
        for key in sorted(set(committed) | set(fresh)):
            if path == "" and key == "generated_with":
                continue
            if key not in committed:
                out.append("%s.%s: new in the fresh output" % (path, key))
            elif key not in fresh:
                out.append("%s.%s: missing from the fresh output" % (path, key))
            else:
                _differences(committed[key], fresh[key], "%s.%s" % (path, key), out)
    elif isinstance(committed, list) and isinstance(fresh, list):
        if len(committed) != len(fresh):
            out.append("%s: %d entries committed, %d fresh" % (path, len(committed), len(fresh)))
            return
        for i, (a, b) in enumerate(zip(committed, fresh)):
            _differences(a, b, "%s[%d]" % (path, i), out)
    elif (
        isinstance(committed, (int, float))
        and isinstance(fresh, (int, float))
        and not isinstance(committed, bool)
        and not isinstance(fresh, bool)
    ):
        a, b = float(committed), float(fresh)
        if not (math.isfinite(a) and math.isfinite(b)):
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                out.append("%s: %r committed, %r fresh" % (path, committed, fresh))
            return
        if abs(a - b) > max(REL_TOL * max(abs(a), abs(b)), ABS_TOL):
            gap = abs(a - b) / max(abs(a), abs(b))
            out.append("%s: %r committed, %r fresh (relative gap %.2e)" % (path, committed, fresh, gap))
    elif committed != fresh or type(committed) is not type(fresh):
        out.append("%s: %r committed, %r fresh" % (path, committed, fresh))


def differences(committed, fresh):
    """Every place where `fresh` differs from `committed` beyond the tolerance."""
    out = []
    _differences(committed, fresh, "", out)
    return out


def count_numbers(value):
    if isinstance(value, dict):
        return sum(count_numbers(v) for k, v in value.items() if k != "generated_with")
    if isinstance(value, list):
        return sum(count_numbers(v) for v in value)
    return int(isinstance(value, (int, float)) and not isinstance(value, bool))


def finish(out, path):
    """Writes `out` to standard output, or with --check compares it with the
    committed file at `path` and exits 1 if they differ."""
    args = sys.argv[1:]
    if args not in ([], ["--check"]):
        print("usage: %s [--check]" % sys.argv[0], file=sys.stderr)
        sys.exit(2)
    # Through json once, so that the comparison sees what a file would hold.
    fresh = json.loads(json.dumps(out))
    if not args:
        json.dump(fresh, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    name = os.path.relpath(path)
    try:
        with open(path, encoding="utf-8") as f:
            committed = json.load(f)
    except (OSError, ValueError) as e:
        print("%s: cannot read the committed file: %s" % (name, e), file=sys.stderr)
        sys.exit(1)
    found = differences(committed, fresh)
    if found:
        print("%s is stale: %d figure(s) differ from what %s computes now:"
              % (name, len(found), os.path.basename(sys.argv[0])), file=sys.stderr)
        for line in found[:50]:
            print("  " + line, file=sys.stderr)
        if len(found) > 50:
            print("  ... and %d more" % (len(found) - 50), file=sys.stderr)
        print("  committed with %s, now %s" % (
            json.dumps(committed.get("generated_with")), json.dumps(fresh.get("generated_with"))),
            file=sys.stderr)
        print("regenerate it: %s %s > %s" % (sys.executable, os.path.relpath(sys.argv[0]), name),
              file=sys.stderr)
        sys.exit(1)
    print("%s is current: %d figures within %g relative" % (name, count_numbers(fresh), REL_TOL),
          file=sys.stderr)
