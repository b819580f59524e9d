#!/usr/bin/env bash
# Agent footprint: resident memory and CPU of an idle `fossa-agent run` (the
# NAT duty re-checking its rules, the fleet poller listing ECS tasks every
# 2 s and the TLS web UI, against moto_server, all inside a network namespace
# of its own) after 60 s, and the size of the binaries. Needs root, iproute2,
# iptables and the test venv (tests/run.sh sets them up).
# BENCH_PROFILE=release measures the agent as deployed.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-dev}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build -q --locked --profile "$profile" -p fossa-agent
cargo build -q --locked -p fossa-bootstrap
venv=${FOSSA_TEST_VENV:-$PWD/.venv}
agent_bin=$PWD/target/$dir/fossa-agent
echo "profile: $profile"
ns=fbidle$$ tmp=$(mktemp -d) moto= agent=
cleanup() {
  [ -n "$agent" ] && kill "$agent" 2>/dev/null
  [ -n "$moto" ] && kill "$moto" 2>/dev/null
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add idle0 type veth peer name idle1
ip -n "$ns" addr add 203.0.113.1/24 dev idle0
ip -n "$ns" addr add 203.0.113.2/24 dev idle1
ip -n "$ns" link set idle0 up
ip -n "$ns" link set idle1 up
ip -n "$ns" route add default via 203.0.113.2
# `ip netns exec` and `env` exec what they run, so `$!` is the pid of the program itself.
aws_env=(AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null)
url=http://127.0.0.1:5000
ip netns exec "$ns" env MOTO_IAM_LOAD_MANAGED_POLICIES=true "$venv/bin/moto_server" -H 127.0.0.1 -p 5000 >"$tmp/moto.log" 2>&1 & moto=$!
until ip netns exec "$ns" curl -fsS -o /dev/null "$url" 2>/dev/null; do sleep 0.2; done
ip netns exec "$ns" env "${aws_env[@]}" target/debug/fossa-bootstrap launch --stack idle --allow-cidr 198.51.100.1/32 --no-wait \
  --agent-binary "$agent_bin" --endpoint-url "$url" >/dev/null 2>"$tmp/launch.log"
cat >"$tmp/agent.toml" <<TOML
stack = "idle"
region = "us-east-1"
endpoint_url = "$url"
state_dir = "$tmp/state"
listen = "127.0.0.1:8443"
duties = ["nat"]
egress_check = "127.0.0.1:5000"
TOML
ip netns exec "$ns" env "${aws_env[@]}" "$agent_bin" run --config "$tmp/agent.toml" 2>"$tmp/agent.log" & agent=$!
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
sleep 1
[ "$(readlink "/proc/$agent/exe")" = "$agent_bin" ] || { echo "pid $agent is not the agent"; exit 1; }
sleep 30
t1=$(ticks)
sleep 30
t2=$(ticks)
grep -q "ready" "$tmp/agent.log" || { echo "the agent never got ready:"; cat "$tmp/agent.log"; exit 1; }
hz=$(getconf CLK_TCK)
awk '/VmRSS/ {printf "agent_idle_rss_after_60s: %.1f MB\n", $2/1024}' "/proc/$agent/status"
awk '/VmHWM/ {printf "agent_peak_rss: %.1f MB\n", $2/1024}' "/proc/$agent/status"
awk '/RssAnon|RssFile/ {printf "agent_idle_%s %.1f MB\n", tolower($1), $2/1024}' "/proc/$agent/status"
echo "agent_threads: $(ls "/proc/$agent/task" | wc -l)"
python3 -c "print('agent_idle_cpu_30s_to_60s: %.2f %%' % (($t2-$t1)/$hz/30*100))"
for b in fossa-agent fossa-bootstrap; do
  for p in debug release; do
    f=target/$p/$b
    [ -f "$f" ] || continue
    strip -o "$tmp/$b.stripped" "$f"
    python3 -c "print('${b//-/_}_binary_$p: %.1f MB; stripped %.1f MB' % ($(stat -c %s "$f")/1e6, $(stat -c %s "$tmp/$b.stripped")/1e6))"
  done
done
