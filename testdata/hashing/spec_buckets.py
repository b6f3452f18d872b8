#!/usr/bin/env python3
"""Print, and re-check, every hash-dependent number used by testdata/spec/*.json.

Python 3 standard library only; the hashing itself is `vectors.py` (flag-format.md
section 6). For every case of the spec suite this script

  * recomputes `metadata.bucket` from the flag definition (flag key, the
    bucketing value of the context, the rollout salt) and checks it to 1e-9;
  * checks that "in"/"out" of the percentage that was decided (the rollout's,
    or the matched rule's SERVE percentage) agrees with `enabled`/`variant`;
  * for a weight split that served a variant without a rollout or percentage
    (reason SPLIT at step 8), checks the variant chosen by the selection value.

It prints one line per hash-dependent case and exits non-zero on a mismatch.
Run: python3 testdata/hashing/spec_buckets.py
"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vectors import choose_variant, in_rollout, rollout_bucket, selection, unit_string  # noqa: E402

SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spec")


def bucketing_value(flag, context):
    rollout = flag.get("rollout") or {}
    attr = rollout.get("bucket_by", "user_id")
    unit = unit_string(context.get(attr))
    if unit is None and attr == "user_id":
        unit = unit_string(context.get("targetingKey"))
    return unit


def rule_by_name(flag, name):
    for i, r in enumerate(flag.get("rules", [])):
        if r.get("name", "rules[%d]" % i) == name:
            return r
    return None


def main():
    failures = 0
    lines = 0
    for path in sorted(glob.glob(os.path.join(SPEC, "*.json"))):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        flags = {fl["key"]: fl for fl in doc["flags"].get("flags", [])}
        for case in doc["cases"]:
            flag = flags.get(case["flag"])
            if flag is None:
                continue
            exp = case["expect"]
            md = exp.get("metadata", {})
            unit = bucketing_value(flag, case["context"])
            salt = (flag.get("rollout") or {}).get("salt", "")
            problems = []
            if "bucket" in md:
                if unit is None:
                    problems.append("bucket given but no bucketing value")
                else:
                    b = rollout_bucket(flag["key"], unit, salt)
                    if abs(b - md["bucket"]) > 1e-9:
                        problems.append("bucket %r != computed %r" % (md["bucket"], b))
                    if "rule" in md:
                        pct = rule_by_name(flag, md["rule"])["serve"]["percentage"]
                    elif "override" in md:
                        pct = flag["override"]["percentage"]
                    else:
                        pct = flag["rollout"]["percentage"]
                    inside = in_rollout(pct, b)
                    variants = flag.get("variants", [])
                    if not variants:
                        if exp["enabled"] != inside:
                            problems.append("enabled %r but in_rollout(%r, %r) is %r" % (exp["enabled"], pct, b, inside))
                    elif not inside:
                        if exp["enabled"] or exp.get("variant") != flag.get("off_variant"):
                            problems.append("out of %r%% must serve off/off_variant" % pct)
                    else:
                        serve = rule_by_name(flag, md["rule"])["serve"] if "rule" in md else {}
                        want = serve.get("variant") or choose_variant(variants, selection(flag["key"], unit))
                        if exp.get("variant") != want:
                            problems.append("in the rollout: variant %r, expected %r" % (exp.get("variant"), want))
                    print("%-28s %-26s unit=%-20s salt=%-8s pct=%-8s bucket=%r %s" % (
                        os.path.basename(path), flag["key"], json.dumps(unit), json.dumps(salt), pct, b,
                        "in" if inside else "out"))
                    lines += 1
            elif (exp["reason"] == "SPLIT" and flag.get("variants") and unit is not None
                  and "missing_bucketing_value" not in md):
                s = selection(flag["key"], unit)
                want = choose_variant(flag["variants"], s)
                if exp.get("variant") != want:
                    problems.append("weight split: variant %r, selection %r gives %r" % (exp.get("variant"), s, want))
                print("%-28s %-26s unit=%-20s selection=%r -> %s" % (
                    os.path.basename(path), flag["key"], json.dumps(unit), s, want))
                lines += 1
            for p in problems:
                failures += 1
                print("MISMATCH %s: %s: %s" % (os.path.basename(path), case["name"], p), file=sys.stderr)
    print("%d hash-dependent cases checked, %d mismatches" % (lines, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
