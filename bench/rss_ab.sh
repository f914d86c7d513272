#!/usr/bin/env bash
# RSS of one node in cluster mode under a constant task load, for comparing two binaries
# (BENCHMARKS.md, "Release figures at 100k, and where the cluster's RSS went").
#
#   bench/rss_ab.sh BINARY SECONDS [EXTRA NODE ARGS...]
#   bench/rss_ab.sh target/release/openclaw-node 120 --config small-cache.json
#
# Starts BINARY on a fresh data dir (127.0.0.9:3000, cluster port 127.0.0.9:7000,
# RUST_LOG=warn), posts ~500-byte tasks with `wrk -c4` (Debian's wrk) in 20-s slices and prints
# after each slice the tasks succeeded, VmRSS and the Raft store's size; then 20 s idle, VmRSS
# and VmHWM. Stops the node at the end. Loopback only; bounded by SECONDS.
set -euo pipefail
bin=$1; secs=$2; shift 2
dir=$(mktemp -d /tmp/rss-ab.XXXXXX)
cat > "$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local pad = string.rep("x", 470)
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"input":"Summarise item ' .. counter .. ' ' .. pad .. '","max_tokens":16}')
end
LUA
export OPENCLAW_CLUSTER_SECRET=${OPENCLAW_CLUSTER_SECRET:-rss-ab-secret-0123456789}
RUST_LOG=warn "$bin" "$@" --data-dir "$dir/d" --http 127.0.0.9:3000 --cluster 127.0.0.9:7000 \
  > "$dir/node.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 5
succeeded() {
  curl -s -m 5 127.0.0.9:3000/metrics \
    | awk '/^openclaw_tasks_total\{priority="normal",status="succeeded"\}/ {print $2}'
}
echo "$(basename "$bin") pid $pid start $(grep VmRSS /proc/$pid/status)"
for i in $(seq 1 $((secs / 20))); do
  wrk -t1 -c4 -d20s -s "$dir/post.lua" http://127.0.0.9:3000/api/tasks > /dev/null 2>&1
  echo "t=$((i * 20))s tasks=$(succeeded) $(grep VmRSS /proc/$pid/status) raft=$(du -sm "$dir/d/raft" | cut -f1)MB"
done
sleep 20
echo "idle+20s tasks=$(succeeded) $(grep VmRSS /proc/$pid/status) $(grep VmHWM /proc/$pid/status)"
