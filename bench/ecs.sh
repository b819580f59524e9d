#!/usr/bin/env bash
# ECS efficiency: the API calls (counted at the HTTP layer) and wall time the
# Fargate backend needs to list and describe 1,000 tasks in moto_server
# (ListTasks pages of 100, DescribeTasks batches of 100). Runs the
# fargate_list test, which also asserts the call count. Needs the test venv.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --locked --workspace --bins
cargo test -q --locked -p fossa-tests --test fargate_list -- --nocapture 2>/dev/null | grep '^ecs_list'
