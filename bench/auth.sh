#!/usr/bin/env bash
# Password checks under attack and in daily use: the web UI as the agent
# serves it (agent/examples/auth_serve.rs: TLS, argon2, the agent's memory
# settings), then
#  - 3 waves of 40 concurrent basic-auth requests with a wrong password, each
#    from its own loopback address (127.0.1.x), so the per-address limit does
#    not stop them: resident memory before, at its peak and after;
#  - 500 API calls with the right password (basic auth): p50 and p99.
# BENCH_PROFILE=release measures the build as deployed (default: dev). Extra
# arguments are other auth_serve binaries (say, built from an older commit)
# measured the same way in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-dev}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build -q --locked --profile "$profile" -p fossa-agent --example auth_serve
echo "profile: $profile"
tmp=$(mktemp -d) server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
measure() {
  local bin=$1 password=bench-password-$$ port
  rm -rf "$tmp/state" && mkdir -p "$tmp/state"
  "$bin" "$tmp/state" "$password" >"$tmp/out" 2>"$tmp/err" & server=$!
  for _ in $(seq 100); do grep -q listening "$tmp/out" 2>/dev/null && break; sleep 0.1; done
  port=$(awk '/listening/ {print $2}' "$tmp/out")
  [ -n "$port" ] || { echo "auth_serve did not start:" >&2; cat "$tmp/err" >&2; exit 1; }
  echo "== $bin"
  python3 - "$server" "$port" "$password" <<'PY'
import base64, http.client, ssl, statistics, sys, threading, time
pid, port, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl._create_unverified_context()
def rss():
    f = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return int(f["VmRSS"].split()[0]) / 1024, int(f["VmHWM"].split()[0]) / 1024
def call(password, source="127.0.0.1"):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, source_address=(source, 0), timeout=120)
    auth = base64.b64encode(f"fossa:{password}".encode()).decode()
    c.request("GET", "/api/v1/workers", headers={"Authorization": f"Basic {auth}"})
    r = c.getresponse(); r.read(); c.close()
    return r.status
call(password)  # warm: one real check
time.sleep(1)
before, hwm0 = rss()
print(f"rss_before_burst: {before:.1f} MB (peak so far {hwm0:.1f} MB)")
statuses = {}
for wave in range(3):
    done = []
    def one(i):
        done.append(call("wrong-password", f"127.0.1.{wave * 40 + i + 1}"))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    [t.start() for t in ts]; [t.join() for t in ts]
    for s in done: statuses[s] = statuses.get(s, 0) + 1
    now, peak = rss()
    print(f"wave_{wave + 1}_rss: {now:.1f} MB (peak so far {peak:.1f} MB)")
time.sleep(2)
after, peak = rss()
print(f"burst_answers: {dict(sorted(statuses.items()))}")
print(f"rss_peak_during_burst: {peak:.1f} MB")
print(f"rss_after_burst: {after:.1f} MB")
lat = []
for _ in range(500):
    t = time.perf_counter(); s = call(password); lat.append((time.perf_counter() - t) * 1000)
    assert s == 200, s
lat.sort()
print(f"basic_auth_workers_p50: {statistics.median(lat):.2f} ms")
print(f"basic_auth_workers_p99: {lat[int(len(lat) * 0.99) - 1]:.2f} ms")
PY
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; server=
}
measure "$PWD/target/$dir/examples/auth_serve"
for other in "$@"; do measure "$other"; done
