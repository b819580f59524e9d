#!/usr/bin/env bash
# No lost work at the issue's scale (#25; tests/tests/lost_work.rs): a
# partitioned model of 200 subtasks (4 s each, each writing its own output)
# on 8 local workers, run undisturbed, then with 2 of the 8 (a quarter)
# killed with -9 mid-subtask. Prints the makespans, the subtasks put back,
# and lost/duplicated/completed (the test asserts 0, 0 and all). Needs root
# and what tests/run.sh installs; the dev build the tests use.
# FOSSA_LOST_WORK="SUBTASKS WORKERS" sets another size.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --locked --workspace --bins
echo "profile: dev"
FOSSA_LOST_WORK=${FOSSA_LOST_WORK:-"200 8"} \
  cargo test -q --locked -p fossa-tests --test lost_work -- --nocapture 2>&1 |
  sed -n 's/^\.*FIGURE //p'
