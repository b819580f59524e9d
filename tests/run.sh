#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian packages and a
# Python venv with moto and ayeaye-fossa), then runs fmt, clippy and every
# test against real local parts. Needs root (network namespaces, iptables,
# dockerd) and Rust (Cargo.toml's rust-version or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

fossa_need_cargo
# A clean clone's run writes about 13 GB: the debug target (~5 GB), the
# first-day test's two musl agents (~3.5 GB), images and dockerd layers
# (~2 GB), the venv and Debian packages. Incremental state is only worth its
# 2.5 GB when the same checkout is built again, which CI never does.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
if [ "$free_gb" -lt 14 ]; then
  echo "warning: ${free_gb} GB free here; a clean run writes about 13 GB (target/, /var/cache/fossa-tests, /tmp)." \
    "If it stops with 'No space left on device', free space or point CARGO_TARGET_DIR at a larger disk." >&2
fi
FOSSA_APT_NO_DAEMONS=1 fossa_apt_install python3 python3-venv curl iproute2 iptables systemd procps \
  docker.io docker-registry busybox-static apache2-utils rabbitmq-server chromium chromium-driver \
  mmdebstrap socat util-linux musl-tools qemu-user-static prometheus
export FOSSA_TEST_VENV="$PWD/.venv"
fossa_venv "$FOSSA_TEST_VENV" tests/requirements.txt
# cargo-zigbuild, for the first-day test's arm64 agent (zig comes from the venv).
if [ ! -x .tools/bin/cargo-zigbuild ]; then
  echo "installing cargo-zigbuild into .tools"
  cargo install --quiet --locked cargo-zigbuild --version 0.24.1 --root "$PWD/.tools"
fi

# The first-day test builds the agent for both instance architectures; add
# their targets once, here, not from two tests at the same time (rustup is
# not safe for that: it once left a target half installed).
if command -v rustup >/dev/null; then
  fossa_rust_targets x86_64-unknown-linux-musl aarch64-unknown-linux-musl
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries the end-to-end tests run)"
cargo build --workspace --bins --locked
echo "== cargo test"
cargo test --workspace --locked -- "$@"
