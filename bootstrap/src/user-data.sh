#!/bin/bash
# fossa-gateway user-data for stack @STACK@: installs fossa-agent as a systemd service.
# It holds no secret: the agent reads every credential from SSM.
set -euo pipefail
exec > >(tee -a /var/log/fossa-user-data.log) 2>&1
echo "fossa: installing the agent for stack @STACK@"

if command -v dnf >/dev/null 2>&1; then
  dnf install -y docker iptables-nft
elif command -v apt-get >/dev/null 2>&1; then
  apt-get update -y && DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io iptables curl
fi
systemctl enable --now docker

# The web UI's own process runs as this account, with no Docker socket.
id fossa-ui >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fossa-ui

install -d -m 0755 /etc/fossa
install -d -m 0700 /var/lib/fossa
tmp=$(mktemp)
curl -fsSL --retry 10 --retry-connrefused --retry-delay 3 -o "$tmp" '@AGENT_URL@'
echo "@AGENT_SHA256@  $tmp" | sha256sum -c -
install -m 0755 "$tmp" /usr/local/bin/fossa-agent
rm -f "$tmp"

cat > /etc/fossa/agent.toml <<'FOSSA_TOML'
@AGENT_TOML@
FOSSA_TOML
# The agent reads it only when no one but root can change it.
chmod 0644 /etc/fossa/agent.toml

cat > /etc/systemd/system/fossa-agent.service <<'FOSSA_UNIT'
@UNIT@
FOSSA_UNIT

systemctl daemon-reload
systemctl enable --now fossa-agent
echo "fossa: agent started; see systemctl status fossa-agent"
