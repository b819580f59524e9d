#!/bin/bash
# fossa-gateway user-data for stack @STACK@: installs fossa-agent as a systemd service.
# It holds no secret: the agent reads every credential from SSM.
set -euo pipefail
exec > >(tee -a /var/log/fossa-user-data.log) 2>&1
echo "fossa: installing the agent for stack @STACK@"

# fossa:fetch-agent begin
# The agent comes from the stack's bucket, signed with the instance's own role
# (IMDSv2), so user-data holds no URL that expires or names anyone's key, and a
# replacement instance booted from it later still gets the agent. The keys go
# to curl on its standard input, never its command line or this log.
imds=http://169.254.169.254
imds_token="" creds=""
role_credentials() {
  local role="" i
  [ -n "$creds" ] && return 0
  for i in $(seq 60); do
    imds_token=$(curl -fsS --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 900' "$imds/latest/api/token") \
      && role=$(curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $imds_token" "$imds/latest/meta-data/iam/security-credentials/") \
      && [ -n "$role" ] \
      && creds=$(curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $imds_token" "$imds/latest/meta-data/iam/security-credentials/$role") \
      && return 0
    creds=""
    sleep 2
  done
  echo "fossa: the instance has no role credentials from its metadata service; check its instance profile @PROFILE@" >&2
  return 1
}
field() { printf '%s\n' "$creds" | sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" | head -n 1; }
fetch_agent() {
  role_credentials || return 1
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

# fossa:attach begin
# What outlives any one instance, taken over from the one this replaces as
# EC2 frees it: the lasting interface (the private routes' target and the
# broker's address, so the workers keep reaching it), the Elastic IP (the
# UI's address) and the data volume (the state directory). EC2's Query API,
# signed with the instance's role like the fetch above.
ec2_call() {
  local form="Action=$1&Version=2016-11-15" kv
  shift
  for kv in "$@"; do form="$form&$kv"; done
  curl -sS --max-time 30 -w '\n%{http_code}' -K - <<FOSSA_CURL
url = "@EC2_URL@"
aws-sigv4 = "aws:amz:@REGION@:ec2"
user = "$(field AccessKeyId):$(field SecretAccessKey)"
header = "x-amz-security-token: $(field Token)"
data = "$form"
FOSSA_CURL
}
# Retries while the old instance still holds it, up to @ATTACH_WAIT_SECS@ s.
until_done() {
  local what=$1 out code said=0 deadline=$((SECONDS + @ATTACH_WAIT_SECS@))
  shift
  while :; do
    out=$(ec2_call "$@" 2>&1) || true
    code=${out##*$'\n'}
    case "$code" in 2[0-9][0-9]) echo "fossa: $what: done ($1)"; return 0 ;; esac
    out=$(printf '%s' "$out" | sed -n 's/.*<Code>\([^<]*\)<\/Code><Message>\([^<]*\)<.*/\1: \2/p' | head -n 1)
    # Only what the old instance still holding it, or EC2 being busy, says
    # is worth waiting for; a refusal (the role, a wrong id) is not.
    case "${out%%:*}" in
      ""|VolumeInUse|IncorrectState|IncorrectInstanceState|InvalidNetworkInterface.InUse|Resource.AlreadyAssociated|RequestLimitExceeded|Throttling|InternalError|Unavailable|ServiceUnavailable) ;;
      *) echo "fossa: $what: $1 refused: $out" >&2; return 1 ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "fossa: $what: $1 still refused after @ATTACH_WAIT_SECS@ s: ${out:-HTTP $code}. Terminate this instance and the group starts another" >&2
      return 1
    fi
    if [ $((SECONDS - said)) -ge 30 ]; then
      echo "fossa: $what: waiting ($1: ${out:-HTTP $code})"
      said=$SECONDS
    fi
    sleep 3
  done
}
meta() { curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $imds_token" "$imds/latest/meta-data/$1"; }
attach_lasting() {
  role_credentials || return 1
  local me mac primary
  me=$(meta instance-id)
  mac=$(meta mac)
  primary=$(meta "network/interfaces/macs/$mac/interface-id")
  # The instance's own interface by its id: once the lasting one is attached
  # EC2 takes no InstanceId for an address (it needs exactly one interface).
  until_done "the Elastic IP" AssociateAddress AllocationId=@ALLOCATION_ID@ "NetworkInterfaceId=$primary" AllowReassociation=true
  # It forwards the workers' replies, which are not its own.
  until_done "forwarding" ModifyNetworkInterfaceAttribute "NetworkInterfaceId=$primary" SourceDestCheck.Value=false
  until_done "the lasting interface" AttachNetworkInterface NetworkInterfaceId=@INTERFACE_ID@ "InstanceId=$me" DeviceIndex=@INTERFACE_INDEX@
  until_done "the data volume" AttachVolume VolumeId=@VOLUME_ID@ "InstanceId=$me" Device=@DATA_DEVICE@
  instance_id=$me
}
# The volume appears as @DATA_DEVICE@, or on Nitro as its NVMe id. It gets a
# file system (XFS, as the AMI's root; ext4 where there is no mkfs.xfs) only when it has none (blkid -p says
# 2: nothing there).
fstab=/etc/fstab
mount_data() {
  local dev="" i d rc
  for i in $(seq 120); do
    for d in @DATA_DEVICE@ "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$(echo @VOLUME_ID@ | tr -d -)"; do
      if [ -b "$d" ]; then dev=$(readlink -f "$d"); break 2; fi
    done
    sleep 1
  done
  if [ -z "$dev" ]; then
    echo "fossa: the data volume @VOLUME_ID@ is attached but no device appeared" >&2
    return 1
  fi
  rc=0
  blkid -p "$dev" >/dev/null 2>&1 || rc=$?
  if [ "$rc" -eq 2 ]; then
    echo "fossa: a new data volume: making its file system"
    if command -v mkfs.xfs >/dev/null 2>&1; then mkfs.xfs -q -L fossa-data "$dev"; else mkfs.ext4 -q -L fossa-data "$dev"; fi
  elif [ "$rc" -ne 0 ]; then
    echo "fossa: cannot read the data volume $dev (blkid $rc); not formatting it" >&2
    return 1
  fi
  install -d -m 0700 @STATE_DIR@
  grep -q ' @STATE_DIR@ ' "$fstab" || echo "LABEL=fossa-data @STATE_DIR@ auto defaults,nofail 0 2" >> "$fstab"
  mountpoint -q @STATE_DIR@ || mount -T "$fstab" @STATE_DIR@
  chmod 0700 @STATE_DIR@
  # Docker's data too: the broker's volume and the image layers come back.
  install -d -m 0710 @STATE_DIR@/docker /var/lib/docker
  grep -q ' /var/lib/docker ' "$fstab" || echo "@STATE_DIR@/docker /var/lib/docker none bind,nofail,x-systemd.requires-mounts-for=@STATE_DIR@ 0 0" >> "$fstab"
  mountpoint -q /var/lib/docker || mount -T "$fstab" /var/lib/docker
  # The agent says when the gateway was replaced, and what came back.
  echo "$instance_id $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> @STATE_DIR@/instances
}
# fossa:attach end

# The lasting parts first: Docker keeps its data (the broker's messages, the
# worker image's layers) on the data volume, so it starts after the mount.
attach_lasting
mount_data
if command -v dnf >/dev/null 2>&1; then
  dnf install -y docker iptables-nft
elif command -v apt-get >/dev/null 2>&1; then
  apt-get update -y && DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io iptables curl
fi
systemctl enable --now docker

# The web UI's own process runs as this account, with no Docker socket.
id fossa-ui >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fossa-ui

install -d -m 0755 /etc/fossa
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
