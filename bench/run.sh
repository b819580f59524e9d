#!/usr/bin/env bash
# Benchmarks: prints each figure as `name: value unit`. Not part of the test
# suite. Runs the dev build (the dependencies are already compiled for the
# tests); figures are for comparing side by side within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --locked -p fossa-agent --example fleet_bench
target/debug/examples/fleet_bench 2>/dev/null | grep -v '^Rocket has launched'
