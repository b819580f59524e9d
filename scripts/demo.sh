#!/usr/bin/env bash
# The demo: fossa-gateway's local mode on this machine, with a private
# RabbitMQ, three real Fossa workers and the built-in example models.
# Installs what it needs (Debian packages; a Python venv on first start),
# builds the agent, and serves the UI on https://127.0.0.1:8443/.
# Extra arguments go to `fossa-agent local` (e.g. --workers 5 --models DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

fossa_need_cargo
fossa_apt_install python3 python3-venv rabbitmq-server
echo "building fossa-agent (the first build takes several minutes)…"
cargo build --locked -q -p fossa-agent
exec target/debug/fossa-agent local --workers 3 "$@"
