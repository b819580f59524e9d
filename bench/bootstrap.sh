#!/usr/bin/env bash
# fossa-bootstrap against a fresh moto_server: wall time and AWS API calls of
# a first launch, a re-run and a destroy. Needs the test venv (tests/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --locked -p fossa-bootstrap -p fossa-agent
venv=${FOSSA_TEST_VENV:-$PWD/.venv}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MOTO_IAM_LOAD_MANAGED_POLICIES=true "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 & moto=$!
trap 'kill $moto' EXIT
until curl -fs "http://127.0.0.1:$port" >/dev/null; do sleep 0.2; done
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=eu-west-2 AWS_EC2_METADATA_DISABLED=true
b="target/debug/fossa-bootstrap"
common=(--stack bench --endpoint-url "http://127.0.0.1:$port")
figure() { # name, command...
  local name=$1; shift
  local line
  line=$("$@" 2>&1 >/dev/null | grep 'AWS API calls in' | tail -1)
  echo "$line" | awk -v n="$name" '{print "bootstrap_" n "_calls: " $1 " calls"; sub("s","",$6); print "bootstrap_" n "_time: " $6 " s"}'
}
# moto loads each service's backend on its first call (several seconds for EC2): warm it up.
$b status --stack warmup --endpoint-url "http://127.0.0.1:$port" >/dev/null 2>&1 || true
figure launch $b launch "${common[@]}" --allow-cidr 203.0.113.7/32 --no-wait --agent-binary /bin/busybox
figure rerun $b launch "${common[@]}" --allow-cidr 203.0.113.7/32 --no-wait --agent-binary /bin/busybox
figure destroy $b destroy "${common[@]}" --yes
