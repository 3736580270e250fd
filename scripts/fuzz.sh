#!/usr/bin/env bash
# Fuzzing with cargo fuzz (libFuzzer): `scripts/fuzz.sh [SECONDS] [TARGET...]` runs each target
# (default: all) for SECONDS (default 600) on its committed corpus in fuzz/corpus/, which grows.
# Works on stable Rust (RUSTC_BOOTSTRAP lets cargo fuzz pass its -Z flags); installs cargo-fuzz
# from crates.io if missing. Crashes land in fuzz/artifacts/<target>/ and fail the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(document_edits framing gguf)
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
# No sanitizer: the code under test is safe Rust (ASan would add nothing there); debug
# assertions and overflow checks stay on (cargo fuzz's default).
cargo fuzz build -s none 2>&1 | tail -3
for t in "${targets[@]}"; do
  echo "== $t: ${seconds}s"
  cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 |
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|INFO: -max_total_time|==[0-9]+==|thread .* panicked|SUMMARY)" || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found a crash: fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
