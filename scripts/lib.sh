# Shared set-up for scripts/demo.sh and tests/run.sh: Debian packages, the
# Rust toolchain check and the Python venv. Source it; it defines functions.

fossa_apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # The tests start their own dockerd, RabbitMQ and Prometheus: with
    # FOSSA_APT_NO_DAEMONS=1 the packages' services are not started on this
    # machine as they install (Debian's policy-rc.d, for this install only).
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ "${FOSSA_APT_NO_DAEMONS:-}" = 1 ] && [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && made_policy=1
    fi
    # `env` inside sudo: sudo would drop DEBIAN_FRONTEND from the environment.
    local rc=0
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi
    return "$rc"
  fi
}

# The Rust the locked dependencies need: Cargo.toml's rust-version, the one
# place it is written (tests/tests/shipped_files.rs keeps it true).
fossa_rust_min() {
  sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml"
}

# fossa_need_cargo: cargo on PATH (under sudo, the calling user's rustup
# install), new enough, and a C toolchain for the crates that build C.
fossa_need_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -n "${SUDO_USER:-}" ]; then
    local home
    home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -x "$home/.cargo/bin/cargo" ]; then
      export PATH="$home/.cargo/bin:$PATH"
      export CARGO_HOME="${CARGO_HOME:-$home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
    fi
  fi
  local min have
  min=$(fossa_rust_min)
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed. Install Rust $min or newer with rustup (https://rustup.rs), then run this again." >&2
    exit 1
  fi
  have=$(rustc --version | awk '{print $2}')
  if ! printf '%s\n%s\n' "$min" "$have" | sort -V -C; then
    echo "error: Rust $have is older than $min, which the locked dependencies need: run 'rustup update', then run this again." >&2
    exit 1
  fi
  fossa_apt_install build-essential pkg-config
}

# fossa_venv DIR REQUIREMENTS: creates or updates a venv with pinned packages.
# Adds Rust targets, one rustup at a time (the lock launch's agent build
# takes too: rustup is not safe to run twice at once), and repairs a target
# an interrupted or concurrent add left half installed: rustup then says
# "detected conflict" on its files, and adding it again needs them gone.
fossa_rust_targets() {
  local home lock t installed
  home=${RUSTUP_HOME:-$HOME/.rustup}
  [ -d "$home" ] || return 0
  lock="$home/fossa-toolchain.lock"
  (
    flock 9
    installed=$(rustup target list --installed)
    for t in "$@"; do
      grep -qx "$t" <<<"$installed" && continue
      if ! rustup target add "$t" >/dev/null 2>&1; then
        echo "the Rust target $t was half installed; removing its files and adding it again"
        local rustlib
        rustlib="$(rustc --print sysroot)/lib/rustlib"
        rm -rf "${rustlib:?}/$t" "$rustlib/manifest-rust-std-$t"
        rustup target add "$t" >/dev/null
      fi
    done
  ) 9>"$lock"
}

fossa_venv() {
  local dir=$1 req=$2 stamp
  stamp="$dir/.fossa-requirements"
  # A venv is not relocatable: one moved or copied from elsewhere (a renamed
  # checkout) has scripts whose #! names the old path. Make it anew then.
  if [ -x "$dir/bin/pip" ] && ! head -n 1 "$dir/bin/pip" | grep -qF "#!$(realpath "$dir")/bin/"; then
    echo "the venv at $dir was made elsewhere; making it anew"
    rm -rf "$dir"
  fi
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
}
