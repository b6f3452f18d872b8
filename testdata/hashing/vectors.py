#!/usr/bin/env python3
"""Independent implementation of the hashing of flag-format.md section 6.

Python 3 standard library only. Running this file writes
`new_checkout_experiment.json` next to it: the rollout bucket, the
variant-selection value and the chosen variant for `new_checkout_experiment`
(50/50 control/treatment, empty salt) and units user_0 .. user_999.

Other scripts import it:

    from vectors import rollout_bucket, selection, choose_variant, in_rollout

    rollout_bucket   = be_u32(sha256("{flag_key}:{unit}:{salt}")[0..4]) / 4294967295 * 100
    in_rollout       = percentage > 0 && rollout_bucket <= percentage
    selection        = be_u32(sha256("{flag_key}:{unit}:variants")[0..4]) / 4294967295
    variant          = first variant whose cumulative weight > selection * 100,
                       else the last variant with a positive weight

`unit` is the bucketing value as a string: strings as they are, integers in
decimal (use `unit_string`).
"""

import hashlib
import json
import os
import sys

U32_MAX = 4294967295  # 2**32 - 1

FLAG = "new_checkout_experiment"
SALT = ""
VARIANTS = [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}]
UNITS = ["user_%d" % i for i in range(1000)]


def _be_u32(text):
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def unit_string(value):
    """The bucketing value of a context attribute, or None when it counts as absent.

    Strings are used as they are, integers in decimal; anything else (float,
    bool, null, array, object) counts as absent.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return None


def rollout_bucket(flag_key, unit, salt=""):
    """The rollout bucket in [0, 100] (unrounded float)."""
    return _be_u32("%s:%s:%s" % (flag_key, unit, salt)) / U32_MAX * 100


def in_rollout(percentage, bucket):
    return percentage > 0 and bucket <= percentage


def selection(flag_key, unit):
    """The variant-selection value in [0, 1]."""
    return _be_u32("%s:%s:variants" % (flag_key, unit)) / U32_MAX


def choose_variant(variants, sel):
    """The key of the variant chosen for a selection value.

    `variants` is a list of {"key", "weight"} in flag order.
    """
    cumulative = 0
    for v in variants:
        cumulative += v["weight"]
        if cumulative > sel * 100:
            return v["key"]
    positive = [v for v in variants if v["weight"] > 0]
    return positive[-1]["key"] if positive else None


def variant_for(flag_key, unit, variants):
    return choose_variant(variants, selection(flag_key, unit))


def build():
    units = []
    counts = {v["key"]: 0 for v in VARIANTS}
    for unit in UNITS:
        sel = selection(FLAG, unit)
        variant = choose_variant(VARIANTS, sel)
        counts[variant] += 1
        units.append({
            "unit": unit,
            "bucket": rollout_bucket(FLAG, unit, SALT),
            "selection": sel,
            "variant": variant,
        })
    return {"flag": FLAG, "salt": SALT, "variants": VARIANTS, "units": units, "counts": counts}


def _self_check():
    # Known-answer test against hashlib directly, so a refactor of the helpers
    # cannot silently change the formula.
    d = hashlib.sha256(b"new_checkout_experiment:user_0:").digest()
    assert rollout_bucket(FLAG, "user_0", "") == int.from_bytes(d[:4], "big") / 4294967295 * 100
    d = hashlib.sha256(b"new_checkout_experiment:user_0:variants").digest()
    assert selection(FLAG, "user_0") == int.from_bytes(d[:4], "big") / 4294967295
    assert choose_variant([{"key": "a", "weight": 50}, {"key": "b", "weight": 50}], 0.5) == "b"
    assert choose_variant([{"key": "a", "weight": 50}, {"key": "b", "weight": 50}], 0.4999) == "a"
    assert choose_variant([{"key": "a", "weight": 100}, {"key": "b", "weight": 0}], 1.0) == "a"
    assert choose_variant([{"key": "a", "weight": 0}, {"key": "b", "weight": 100}], 0.0) == "b"
    assert unit_string(42) == "42" and unit_string(-7) == "-7"
    assert unit_string(True) is None and unit_string(1.5) is None and unit_string(None) is None


def render(data):
    # One unit per line; json.dumps writes floats with their full repr.
    lines = ["{"]
    for key in ("flag", "salt", "variants"):
        lines.append("  %s: %s," % (json.dumps(key), json.dumps(data[key])))
    lines.append('  "units": [')
    lines.append(",\n".join("    " + json.dumps(u) for u in data["units"]))
    lines.append("  ],")
    lines.append('  "counts": %s' % json.dumps(data["counts"]))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    _self_check()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), FLAG + ".json")
    data = build()
    text = render(data)
    if "--check" in sys.argv[1:]:
        # CI: the committed vectors must be exactly what this script computes.
        with open(out, encoding="utf-8") as f:
            if f.read() != text:
                print("%s is stale: run python3 %s" % (out, sys.argv[0]), file=sys.stderr)
                sys.exit(1)
        print("%s is current: %s" % (out, data["counts"]), file=sys.stderr)
        return
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote %s: %s" % (out, data["counts"]), file=sys.stderr)


if __name__ == "__main__":
    main()
