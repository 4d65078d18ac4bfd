#!/usr/bin/env bash
# A short fuzz run (CI runs it after the tests): every cargo-fuzz target of fuzz/ for
# FUZZ_SECONDS (default 25) of fuzzing each, from its seeds (fuzz/seeds/<target>) and the corpus
# earlier runs kept (fuzz/corpus/<target>, git-ignored). A crash, a timeout (FUZZ_TIMEOUT seconds
# on one input, default 10) or running out of memory fails it, with the input saved in
# fuzz/artifacts/<target>/ and the command that replays it printed.
#
# cargo-fuzz needs the nightly toolchain: without one this prints that it skipped and why, and
# succeeds (the README's commands need only stable Rust). cargo-fuzz itself is installed when
# missing, at the pinned version.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
seconds="${FUZZ_SECONDS:-25}"
timeout="${FUZZ_TIMEOUT:-10}"

if ! nightly=$(cargo +nightly --version 2>&1); then
  echo "fuzz-short: skipped: no nightly Rust toolchain, which cargo-fuzz needs (cargo +nightly: ${nightly%%$'\n'*});"
  echo "fuzz-short: install one with 'rustup toolchain install nightly' to run the fuzz targets"
  exit 0
fi
if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "fuzz-short: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

mapfile -t targets < <(cargo +nightly fuzz list)
echo "fuzz-short: building ${targets[*]} ($nightly, address sanitizer)"
cargo +nightly fuzz build

summary=()
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log="fuzz/target/fuzz-short-$target.log"
  echo "fuzz-short: $target for ${seconds}s"
  if ! cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz-short: $target FAILED (full output: $log; the input is in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  summary+=("$target: ${runs:-?} inputs in ${seconds}s, no crash")
done
printf 'fuzz-short: %s\n' "${summary[@]}"
