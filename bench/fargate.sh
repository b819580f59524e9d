#!/usr/bin/env bash
# The whole AWS path on the Fargate emulator (tests/tests/whole_path.rs):
# agent start -> N emulated workers answering, a model change (re-run of
# launch) -> every task on the new code, and the repair figures on the way.
# Prints `name: value s`. Needs root and what tests/run.sh installs; the dev
# build of the agent (BENCH_PROFILE=release for the deployed profile).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-dev}
flag=$([ "$profile" = dev ] && echo "" || echo "--profile $profile")
# shellcheck disable=SC2086
cargo build -q --locked $flag --workspace --bins
echo "profile: $profile"
# shellcheck disable=SC2086
cargo test -q --locked $flag -p fossa-tests --test whole_path -- --nocapture 2>&1 |
  sed -n 's/^FIGURE \(.*\): \([0-9.]*\)s$/\1: \2 s/p; s/^FIGURE \(.*\)$/\1/p'
