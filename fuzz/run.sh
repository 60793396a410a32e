#!/usr/bin/env bash
# Build the fuzz targets with libFuzzer coverage instrumentation (what
# `cargo fuzz build` does, without needing cargo-fuzz installed), seed their
# corpora and run each for FUZZ_SECONDS (default 60).
#   fuzz/run.sh [TARGET...]        targets: pickle_parse scan legacy_open (default: all)
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pickle_parse scan legacy_open)
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo +nightly build --release --target "$triple" --target-dir target/cov "${targets[@]/#/--bin=}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  for f in ../crates/amber-pickle/tests/data/*.pkl ../crates/amber-pickle/tests/data/*.joblib \
           ../crates/amber-scan/tests/data/benign/*.pkl ../crates/amber-scan/tests/data/benign/*.joblib \
           ../crates/amber-scan/tests/data/benign/*.stream ../crates/amber-scan/tests/data/hostile/*.pkl; do
    [ -f "$f" ] || continue
    # The first byte selects the mode (scan: 0 pickle, 1 joblib, 2+3n amber with n buffers).
    case "$f" in
      *.joblib) sel='\x01' ;;
      *.stream) sel='\x05' ;;
      *) sel='\x00' ;;
    esac
    { printf "$sel"; cat "$f"; } > "corpus/$t/seed-$(basename "$f")"
  done
  "target/cov/$triple/release/$t" "corpus/$t" -artifact_prefix="artifacts/$t/" \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=512 -timeout=2 -print_final_stats=1
done
