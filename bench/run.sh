#!/usr/bin/env bash
# Benchmarks: prints each figure as `name: value unit`. Not part of the test
# suite. Runs the dev build (the dependencies are already compiled for the
# tests); figures are for comparing side by side within one run.
# BENCH_PROFILE=release measures what is deployed (a cold release build of the
# agent takes about 11 minutes here).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-dev}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build -q --locked --profile "$profile" -p fossa-agent --example fleet_bench
echo "profile: $profile"
"target/$dir/examples/fleet_bench" 2>/dev/null | grep -v '^Rocket has launched'
