#!/usr/bin/env bash
# A worker flooding the gateway (#27): nodes listing ~260,000 tasks and nodes
# with ~4 MiB kwargs, among ordinary ones. Prints the refresh time, each
# task page's latency and the memory. FLOOD_NODES=N sets how many of each
# kind (default 4). BENCH_PROFILE=release measures what is deployed.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-dev}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build -q --locked --profile "$profile" -p fossa-agent --example flood_bench
echo "profile: $profile"
"target/$dir/examples/flood_bench" 2>/dev/null | grep -v '^Rocket has launched'
