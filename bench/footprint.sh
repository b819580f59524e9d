#!/usr/bin/env bash
# Agent footprint: resident memory and CPU of an idle `fossa-agent run` (the
# NAT duty re-checking its rules, the fleet poller listing ECS tasks every
# 2 s and the TLS web UI, against moto_server, all inside a network namespace
# of its own) after 60 s, and the size of the binaries. Needs root, iproute2,
# iptables and the test venv (tests/run.sh sets them up).
# BENCH_PROFILE=release measures the agent as deployed. Extra arguments are
# other agent binaries (say, one built before a profile change) measured the
# same way in the same run, each with its RSS as a ratio of the first.
# AGENT_BIN=PATH measures that binary instead of building one (say, a
# release build made in another worktree). HISTORY_TASKS=N starts the first
# agent on a task history of N tasks (written by agent/examples/history_bench.rs)
# and the others on none: give the same binary again to see what the history
# costs, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-dev}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
if [ -z "${AGENT_BIN:-}" ]; then
  cargo build -q --locked --profile "$profile" -p fossa-agent
fi
cargo build -q --locked -p fossa-bootstrap
if [ -n "${HISTORY_TASKS:-}" ]; then
  cargo build -q --locked --profile "$profile" -p fossa-agent --example history_bench
fi
venv=${FOSSA_TEST_VENV:-$PWD/.venv}
agent_bin=$(realpath "${AGENT_BIN:-$PWD/target/$dir/fossa-agent}")
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
# measure LABEL BINARY: start the agent, wait 60 s, print its figures; leaves
# its idle RSS in kB in $rss_kb.
measure() {
  local label=$1 bin=$2
  rm -rf "$tmp/state"
  if [ -n "${HISTORY_TASKS:-}" ] && [ "$label" = agent ]; then
    "${CARGO_TARGET_DIR:-target}/$dir/examples/history_bench" fill "$tmp/state" "$HISTORY_TASKS" | sed "s/^/${label}_/"
  fi
  ip netns exec "$ns" env "${aws_env[@]}" "$bin" run --config "$tmp/agent.toml" 2>"$tmp/agent.log" & agent=$!
  ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
  sleep 1
  [ "$(readlink "/proc/$agent/exe")" = "$bin" ] || { echo "pid $agent is not the agent"; exit 1; }
  sleep 30
  local t1 t2 hz
  t1=$(ticks)
  sleep 30
  t2=$(ticks)
  grep -q "ready" "$tmp/agent.log" || { echo "the agent never got ready:"; cat "$tmp/agent.log"; exit 1; }
  hz=$(getconf CLK_TCK)
  echo "agent: $bin"
  awk -v l="$label" '/VmRSS/ {printf "%s_idle_rss_after_60s: %.1f MB\n", l, $2/1024}' "/proc/$agent/status"
  awk -v l="$label" '/VmHWM/ {printf "%s_peak_rss: %.1f MB\n", l, $2/1024}' "/proc/$agent/status"
  awk -v l="$label" '/RssAnon|RssFile/ {printf "%s_idle_%s %.1f MB\n", l, tolower($1), $2/1024}' "/proc/$agent/status"
  echo "${label}_threads: $(ls "/proc/$agent/task" | wc -l)"
  # Where the resident pages are: the largest mappings, summed by what backs them.
  awk -v l="$label" '/^[0-9a-f]+-[0-9a-f]+ / {name = (NF >= 6 ? $6 : "[anon]") " " $2} /^Rss:/ {rss[name] += $2}
    END {for (n in rss) if (rss[n] >= 512) printf "%s_idle_rss_of %s: %.1f MB\n", l, n, rss[n]/1024}' "/proc/$agent/smaps" | sort -t: -k2 -rn
  python3 -c "print('${label}_idle_cpu_30s_to_60s: %.2f %%' % (($t2-$t1)/$hz/30*100))"
  rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
  kill "$agent"
  wait "$agent" 2>/dev/null || true
  agent=
}
measure agent "$agent_bin"
first_kb=$rss_kb
i=0
for other in "$@"; do
  i=$((i + 1))
  measure "other$i" "$(realpath "$other")"
  python3 -c "print('agent_idle_rss_over_other${i}_ratio: %.2f' % ($first_kb/$rss_kb))"
done
for b in fossa-agent fossa-bootstrap; do
  for p in debug release; do
    f=target/$p/$b
    [ -f "$f" ] || continue
    strip -o "$tmp/$b.stripped" "$f"
    python3 -c "print('${b//-/_}_binary_$p: %.1f MB; stripped %.1f MB' % ($(stat -c %s "$f")/1e6, $(stat -c %s "$tmp/$b.stripped")/1e6))"
  done
done
