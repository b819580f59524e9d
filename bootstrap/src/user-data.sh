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

# fossa:fetch-agent begin
# The agent comes from the stack's bucket, signed with the instance's own role
# (IMDSv2), so user-data holds no URL that expires or names anyone's key, and a
# replacement instance booted from it later still gets the agent. The keys go
# to curl on its standard input, never its command line or this log.
fetch_agent() {
  local imds=http://169.254.169.254 token="" role="" creds="" i
  for i in $(seq 60); do
    token=$(curl -fsS --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 900' "$imds/latest/api/token") \
      && role=$(curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/iam/security-credentials/") \
      && [ -n "$role" ] \
      && creds=$(curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/iam/security-credentials/$role") \
      && break
    creds=""
    sleep 2
  done
  if [ -z "$creds" ]; then
    echo "fossa: the instance has no role credentials from its metadata service; check its instance profile @PROFILE@" >&2
    return 1
  fi
  field() { printf '%s\n' "$creds" | sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" | head -n 1; }
  curl -fsS --retry 10 --retry-connrefused --retry-delay 3 --max-time 300 -o "$1" -K - <<FOSSA_CURL
url = "@AGENT_OBJECT_URL@"
aws-sigv4 = "aws:amz:@REGION@:s3"
user = "$(field AccessKeyId):$(field SecretAccessKey)"
header = "x-amz-security-token: $(field Token)"
header = "x-amz-expected-bucket-owner: @ACCOUNT@"
header = "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
FOSSA_CURL
}
# fossa:fetch-agent end

install -d -m 0755 /etc/fossa
install -d -m 0700 /var/lib/fossa
tmp=$(mktemp)
fetch_agent "$tmp"
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
