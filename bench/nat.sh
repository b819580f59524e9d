#!/usr/bin/env bash
# NAT throughput: a TCP stream from a private "task" namespace to an
# "internet" namespace through the gateway namespace, first with plain
# forwarding (the internet host routes back to the private subnet), then with
# `fossa-agent nat apply` (no return route: MASQUERADE does it), and over a
# direct veth pair; side by side in one run. Needs root; installs iproute2,
# iptables, iperf3 and python3 when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
fossa_apt_install iproute2 iptables iperf3 python3
cargo build -q --locked -p fossa-agent
agent=$PWD/target/debug/fossa-agent
p=fb$$
cleanup() { for n in t g i d1 d2; do ip netns del "$p$n" 2>/dev/null || true; done; }
trap cleanup EXIT
for n in t g i d1 d2; do ip netns add "$p$n"; ip -n "$p$n" link set lo up; done
ip link add task0 netns "${p}t" type veth peer name gwin netns "${p}g"
ip link add gwout netns "${p}g" type veth peer name inet0 netns "${p}i"
ip link add a0 netns "${p}d1" type veth peer name b0 netns "${p}d2"
ip -n "${p}t" addr add 192.168.2.10/24 dev task0
ip -n "${p}g" addr add 192.168.2.1/24 dev gwin
ip -n "${p}g" addr add 203.0.113.1/24 dev gwout
ip -n "${p}i" addr add 203.0.113.2/24 dev inet0
ip -n "${p}d1" addr add 203.0.113.1/24 dev a0
ip -n "${p}d2" addr add 203.0.113.2/24 dev b0
for x in "t task0" "g gwin" "g gwout" "i inet0" "d1 a0" "d2 b0"; do set -- $x; ip -n "$p$1" link set "$2" up; done
ip -n "${p}t" route add default via 192.168.2.1
ip -n "${p}g" route add default via 203.0.113.2

# iperf3 on both ends: a C sender and receiver, so the figures are the
# kernel's paths rather than an interpreter's copy loop. -A pins the client
# to core 0 and the server to core 1 on every path alike (with 2+ cores).
secs=${NAT_BENCH_SECONDS:-2}
ip netns exec "${p}i" iperf3 -s -p 9000 >/dev/null 2>&1 & s1=$!
ip netns exec "${p}d2" iperf3 -s -p 9000 >/dev/null 2>&1 & s2=$!
trap 'kill $s1 $s2 2>/dev/null; cleanup' EXIT
sleep 0.5
pin=()
[ "$(nproc)" -ge 2 ] && pin=(-A 0,1)
once() {
  ip netns exec "$1" iperf3 -c 203.0.113.2 -p 9000 -t "$secs" "${pin[@]}" -J |
    python3 -c 'import json,sys
r = json.load(sys.stdin)
if "error" in r: sys.exit("iperf3 from %s: %s" % (sys.argv[1], r["error"]))
print(r["end"]["sum_received"]["bits_per_second"] / 8e6)' "$1"
}
ip netns exec "${p}g" sysctl -qw net.ipv4.ip_forward=1
rounds=${NAT_BENCH_ROUNDS:-15}
forward=() nat=() direct=()
# Interleaved rounds, so drift in the machine's load hits every path alike.
for _ in $(seq "$rounds"); do
  ip -n "${p}i" route add 192.168.2.0/24 via 203.0.113.1
  forward+=("$(once "${p}t")")
  ip -n "${p}i" route del 192.168.2.0/24 via 203.0.113.1
  ip netns exec "${p}g" "$agent" nat apply --private-cidr 192.168.2.0/24 >/dev/null
  nat+=("$(once "${p}t")")
  ip netns exec "${p}g" "$agent" nat remove --private-cidr 192.168.2.0/24 >/dev/null
  direct+=("$(once "${p}d1")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.0f-%.0f", lo, hi}'; }
report() { # NAME VALUES...
  local name=$1; shift
  printf '%s: %.0f MB/s (median of %s rounds; range %s)\n' "$name" "$(median "$@")" "$rounds" "$(spread "$@")"
}
report nat_throughput "${nat[@]}"
report forwarding_without_nat_throughput "${forward[@]}"
report direct_veth_throughput "${direct[@]}"
nat=$(median "${nat[@]}"); forward=$(median "${forward[@]}"); direct=$(median "${direct[@]}")
python3 -c "print('nat_over_plain_forwarding_ratio: %.2f' % ($nat/$forward))"
python3 -c "print('nat_over_direct_veth_ratio: %.2f' % ($nat/$direct))"
