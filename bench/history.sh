#!/usr/bin/env bash
# The task history at scale (agent/examples/history_bench.rs): 100,000 tasks
# written through the recorder, then
#  - fleet refreshes while the recorder is flooded with batches of 1,000
#    rows: p50 and max (the poller never waits on the recorder);
#  - 300 GETs each of /tasks (the page), /api/v1/tasks (a page of 50), the
#    filtered API (model + status) and an older page (a cursor deep in the
#    history), with basic auth: p50 and p99;
#  - a log tail of 10,000 lines: /api/v1/workers/sim-1/logs?limit=10000 and
#    /workers/sim-1/logs.txt, p50 and p99 of 50 each;
#  - the CSV export of the whole history: time and size;
#  - the server's RSS after all of it.
# BENCH_PROFILE=release (the default here) measures the build as deployed;
# dev measures the debug build. HISTORY_TASKS sets the count (default 100000).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-release}
n=${HISTORY_TASKS:-100000}
dir=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build -q --locked --profile "$profile" -p fossa-agent --example history_bench
echo "profile: $profile"
tmp=$(mktemp -d) server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
password=bench-password-$$
"$dir/examples/history_bench" serve "$tmp/state" "$n" "$password" >"$tmp/out" 2>"$tmp/err" & server=$!
for _ in $(seq 600); do grep -q listening "$tmp/out" 2>/dev/null && break; sleep 0.2; done
port=$(awk '/listening/ {print $2}' "$tmp/out")
[ -n "$port" ] || { echo "history_bench did not start:" >&2; cat "$tmp/err" >&2; exit 1; }
grep -Ev 'listening|Rocket|>>' "$tmp/out" || true
stat -c %s "$tmp/state/history.sqlite3" | awk '{printf "history_db_size: %.1f MB\n", $1/1e6}'
python3 - "$server" "$port" "$password" <<'PY'
import base64, http.client, ssl, sys, time, json
pid, port, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl._create_unverified_context()
auth = {"Authorization": "Basic " + base64.b64encode(f"fossa:{password}".encode()).decode()}
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=120)
def get(path):
    t = time.perf_counter()
    c.request("GET", path, headers=auth)
    r = c.getresponse(); body = r.read()
    assert r.status == 200, (path, r.status, body[:200])
    return (time.perf_counter() - t) * 1000, body
def measure(name, path, n):
    get(path)
    ms = sorted(get(path)[0] for _ in range(n))
    print(f"{name}: p50 {ms[len(ms)//2]:.1f} ms, p99 {ms[int(len(ms)*0.99)-1 if n >= 100 else -1]:.1f} ms ({n} requests)")
first = json.loads(get("/api/v1/tasks?limit=50")[1])
print(f"history_total: {first['total']}")
deep = first["tasks"] and json.loads(get("/api/v1/tasks?limit=10000")[1])["next_before"]
measure("tasks_page", "/tasks", 300)
measure("api_tasks_page_of_50", "/api/v1/tasks", 300)
measure("api_tasks_filtered", "/api/v1/tasks?model=SpreadEtl&status=failed", 300)
measure("api_tasks_older_page", f"/api/v1/tasks?before={deep}", 300)
measure("log_tail_10000_lines_api", "/api/v1/workers/sim-1/logs?limit=10000", 50)
measure("log_tail_10000_lines_text", "/workers/sim-1/logs.txt", 50)
def rss():
    f = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return int(f['VmRSS'].split()[0])/1024
print(f"server_rss_before_export: {rss():.1f} MB")
ms, body = get("/api/v1/tasks/export?format=csv")
rows = body.count(b"\n") - 1
print(f"export_csv: {ms/1000:.2f} s, {len(body)/1e6:.1f} MB, {rows} rows")
f = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
print(f"server_rss_after: {int(f['VmRSS'].split()[0])/1024:.1f} MB (peak {int(f['VmHWM'].split()[0])/1024:.1f} MB)")
PY
