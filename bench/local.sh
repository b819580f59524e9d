#!/usr/bin/env bash
# Local mode: time from `fossa-agent local` start to every worker ready, and
# wall time of the example partitioned model (QuickPartitionedEtl: 8 subtasks
# of about 1 s) on 1 and on 3 workers, side by side. Needs root, the Debian
# rabbitmq-server and the test venv (tests/run.sh sets both up).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --locked -p fossa-agent
venv=${FOSSA_TEST_VENV:-$PWD/.venv}
export GATEWAY_HTTP_PASSWORD=bench-password-$$
run() { # workers
  local n=$1 dir port pid out
  dir=$(mktemp -d); chmod 755 "$dir"; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  target/debug/fossa-agent local --workers "$n" --listen "127.0.0.1:$port" --python "$venv/bin/python" --state-dir "$dir" >"$dir/out" 2>/dev/null & pid=$!
  until grep -q "workers ready in" "$dir/out" 2>/dev/null; do sleep 0.2; kill -0 $pid; done
  grep -o "ready in [0-9.]*s" "$dir/out" | awk -v n="$n" '{sub("s","",$3); print "local_ready_" n "_workers: " $3 " s"}'
  local api="https://127.0.0.1:$port/api/v1" t0 id status
  t0=$(date +%s.%N)
  id=$(curl -sk -u "fossa:$GATEWAY_HTTP_PASSWORD" -X POST "$api/tasks" -d '{"model_class":"QuickPartitionedEtl"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
  while :; do
    status=$(curl -sk -u "fossa:$GATEWAY_HTTP_PASSWORD" "$api/tasks/$id" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("task",{}).get("status",""))' 2>/dev/null || true)
    [ "$status" = complete ] || [ "$status" = failed ] && break
    sleep 0.2
  done
  python3 -c "import time; print('local_quick_model_%s_workers: %.1f s' % ($n, time.time() - $t0))"
  kill -INT $pid; wait $pid || true; rm -rf "$dir"
}
run 1
run 3
