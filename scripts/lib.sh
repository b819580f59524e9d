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
    # `env` inside sudo: sudo would drop DEBIAN_FRONTEND from the environment.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

fossa_need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed. Install Rust 1.85 or newer with rustup (https://rustup.rs), then run this again." >&2
    exit 1
  fi
}

# fossa_venv DIR REQUIREMENTS: creates or updates a venv with pinned packages.
fossa_venv() {
  local dir=$1 req=$2 stamp
  stamp="$dir/.fossa-requirements"
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
}
