#!/usr/bin/env bash
# Fuzzes one target on the stable toolchain, then minimizes its corpus.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer options...]
#   fuzz/run.sh build              # builds every target, runs none
#   fuzz/run.sh TARGET repro FILE  # runs one input (a crash) once
#
# TARGET: flagfile, evaluate, sse, request_body, events (fuzz_targets/).
# libFuzzer comes from the libfuzzer-sys crate (built with the C++
# compiler); coverage is LLVM's SanitizerCoverage, asked for with -C passes
# and -C llvm-args, which stable rustc accepts (cargo-fuzz's -Zsanitizer
# needs nightly; this needs no sanitizer). Release build with debug
# assertions and overflow checks on. The corpus, fuzz/corpus/TARGET, is
# committed; crashes land in fuzz/artifacts/TARGET/ (not committed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$here/target}
host=$(rustc -vV | sed -n 's/^host: //p')
# --target even though it is the host: then RUSTFLAGS reach only the
# targets' code, not build scripts and proc macros (which would need
# libFuzzer's symbols to load).
export RUSTFLAGS="-C passes=sancov-module \
 -C llvm-args=-sanitizer-coverage-level=4 \
 -C llvm-args=-sanitizer-coverage-inline-8bit-counters \
 -C llvm-args=-sanitizer-coverage-pc-table \
 -C llvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing"

build() {
    cargo build --release --locked --manifest-path "$here/Cargo.toml" --target "$host" "$@"
}

if [ "${1:-}" = build ]; then
    build --bins
    exit 0
fi
target=${1:?usage: fuzz/run.sh TARGET SECONDS [libFuzzer options...]}
seconds=${2:?usage: fuzz/run.sh TARGET SECONDS [libFuzzer options...]}
shift 2
build --bin "$target"
bin=$CARGO_TARGET_DIR/$host/release/$target
corpus=$here/corpus/$target
artifacts=$here/artifacts/$target
mkdir -p "$corpus" "$artifacts"

if [ "$seconds" = repro ]; then
    exec "$bin" -runs=1 "$@"
fi

"$bin" "$corpus" -dict="$here/guidon.dict" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$@"

# Keep a small set of inputs that covers every edge reached (edges alone,
# not hit counts: a few hundred files instead of thousands).
minimized=$(mktemp -d)
"$bin" -set_cover_merge=1 -use_counters=0 "$minimized" "$corpus" >/dev/null 2>&1
rm -rf "$corpus"
mv "$minimized" "$corpus"
chmod 755 "$corpus"
echo "corpus: $(ls "$corpus" | wc -l) inputs, $(du -sk "$corpus" | cut -f1) KiB"
