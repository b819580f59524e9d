#!/usr/bin/env bash
# NAT throughput: a TCP stream from a private "task" namespace to an
# "internet" namespace through the gateway namespace, first with plain
# forwarding (the internet host routes back to the private subnet), then with
# `fossa-agent nat apply` (no return route: MASQUERADE does it), and over a
# direct veth pair; side by side in one run. Needs root, iproute2, iptables, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
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

server='import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9000)); s.listen(4)
while True:
    c,_=s.accept()
    while c.recv(1<<20): pass
    c.close()'
client='import socket,sys,time
size=int(sys.argv[2]); buf=b"x"*(1<<20); s=socket.create_connection((sys.argv[1],9000)); t=time.time(); sent=0
while sent<size: s.sendall(buf); sent+=len(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); print(sent/(time.time()-t)/1e6)'
ip netns exec "${p}i" python3 -c "$server" & s1=$!
ip netns exec "${p}d2" python3 -c "$server" & s2=$!
trap 'kill $s1 $s2 2>/dev/null; cleanup' EXIT
sleep 0.5
once() { ip netns exec "$1" python3 -c "$client" 203.0.113.2 $((512<<20)); }
ip netns exec "${p}g" sysctl -qw net.ipv4.ip_forward=1
rounds=${NAT_BENCH_ROUNDS:-5}
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
nat=$(median "${nat[@]}"); forward=$(median "${forward[@]}"); direct=$(median "${direct[@]}")
printf 'nat_throughput: %.0f MB/s (median of %s)\n' "$nat" "$rounds"
printf 'forwarding_without_nat_throughput: %.0f MB/s (median of %s)\n' "$forward" "$rounds"
printf 'direct_veth_throughput: %.0f MB/s (median of %s)\n' "$direct" "$rounds"
python3 -c "print('nat_over_plain_forwarding_ratio: %.2f' % ($nat/$forward))"
python3 -c "print('nat_over_direct_veth_ratio: %.2f' % ($nat/$direct))"
