#!/usr/bin/env bash
# deploy/smoke.sh — the production stack (docker-compose.prod.yml) end to end on this machine,
# with nothing pulled from a registry. Run by .ci/run where Docker is available.
#
#  1. builds every image (deploy/build-images.sh) under a tag of its own, the gateway from an
#     existing binary (OPENCLAW_BINARY, default target/debug/openclaw-node; built if missing);
#  2. brings the stack up as a compose project of its own (its own network and volumes; ports on
#     127.0.0.1, picked free; a throw-away token, secret and self-signed certificate);
#  3. through nginx: waits for 3 alive nodes and a leader; submits a task over HTTPS (HTTP/2,
#     the certificate verified) with an Idempotency-Key and waits for its result, resubmits it
#     (same task back); streams a chat completion over HTTP; drives /api/ past nginx's limit_req
#     zone (429s); adds a test double answering 503 to the `gateways` pool and checks that nginx
#     retries keyed task submissions elsewhere but passes unkeyed ones' 503 through;
#  4. Prometheus: every target up (3 gateways, nginx and node exporters), Alertmanager attached;
#     every expression of the dashboard returns series (they exist from start-up); probes are not
#     in openclaw_requests_total;
#  5. deploy/rolling-update.sh restarts the three gateways one by one; the task is still there;
#  6. kills one gateway (a follower) with `docker kill`; 60 requests through nginx (48 reads,
#     12 keyed task submissions) must all succeed, and the 12 tasks must finish;
#     rolling-update.sh must refuse to start (a member is down); Prometheus must show the target
#     down and GatewayDown pending or firing;
#  7. tears everything down — containers, network, volumes, image tags, temp files — also on
#     failure or timeout (trap), after printing the containers' last log lines on failure.
#
# Bounded: SMOKE_TIMEOUT seconds in all (default 480), every wait has its own deadline, every
# request a timeout. SMOKE_ROLLING=0 skips step 5. Exit 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE_TIMEOUT="${SMOKE_TIMEOUT:-480}"
t_start=$(date +%s)
id="$(date +%s)-$$"
proj="openclaw-smoke-$id"
tag="smoke-$id"
binary="${OPENCLAW_BINARY:-target/debug/openclaw-node}"
tmp="$(mktemp -d)"
images=(openclaw-node openclaw-nginx openclaw-prometheus openclaw-alertmanager
        openclaw-nginx-exporter openclaw-node-exporter)

step() { printf '[smoke %3ds] %s\n' $(( $(date +%s) - t_start )) "$*"; }
fail() { printf '[smoke %3ds] FAILED: %s\n' $(( $(date +%s) - t_start )) "$*" >&2; exit 1; }
elapsed() { echo $(( $(date +%s) - t_start )); }

for tool in docker curl python3 openssl; do
  command -v "$tool" >/dev/null || fail "needs \`$tool\`"
done
docker info >/dev/null 2>&1 || fail "Docker is not available (docker info failed)"
if docker compose version >/dev/null 2>&1; then dc=(docker compose); else
  command -v docker-compose >/dev/null || fail "needs \`docker compose\` or \`docker-compose\`"
  dc=(docker-compose)
fi
dc+=(--env-file "$tmp/env" -p "$proj" -f docker-compose.prod.yml)
stack_up=0

cleanup() {
  local rc=$?
  trap - EXIT TERM INT
  set +e  # tear down as much as possible, whatever fails
  [ -n "${watchdog:-}" ] && kill "$watchdog" 2>/dev/null
  docker rm -f "$proj-fake503" >/dev/null 2>&1 || true
  if [ "$stack_up" = 1 ]; then
    if [ "$rc" != 0 ]; then
      echo "---- containers and their last log lines ----"
      "${dc[@]}" ps 2>/dev/null || true
      "${dc[@]}" logs --no-color --tail=25 2>/dev/null | tail -n 200 || true
      echo "----"
    fi
    "${dc[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1 || echo "smoke: compose down failed" >&2
  fi
  for i in "${images[@]}"; do docker rmi "$i:$tag" >/dev/null 2>&1 || true; done
  local left
  left="$(docker ps -aq --filter "label=com.docker.compose.project=$proj"; \
          docker network ls -q --filter "name=${proj}_"; \
          docker volume ls -q --filter "name=${proj}_"; \
          docker images -q --filter "reference=openclaw-*:$tag")"
  [ -z "$left" ] || echo "smoke: WARNING: left behind: $left" >&2
  rm -rf "$tmp"
  if [ "$rc" = 0 ]; then step "PASSED in $(elapsed)s (torn down)"; else step "FAILED (exit $rc) after $(elapsed)s (torn down)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "smoke: stopped after ${SMOKE_TIMEOUT}s or by a signal" >&2; exit 124' TERM
trap 'exit 130' INT
( sleep "$SMOKE_TIMEOUT"; kill -TERM $$ 2>/dev/null ) &
watchdog=$!

# 1. Images.
if [ ! -x "$binary" ]; then
  step "no binary at $binary: cargo build -p openclaw-node"
  nice -n 10 cargo build -q -p openclaw-node
  binary=target/debug/openclaw-node
fi
step "building images (tag $tag, gateway from $binary)"
deploy/build-images.sh --tag "$tag" --binary "$binary" --tls-dir "$tmp/tls" | sed 's/^/    /'

# 2. The stack.
token="$(openssl rand -hex 16)"
cat > "$tmp/env" <<EOF
OPENCLAW_API_TOKEN=$token
OPENCLAW_CLUSTER_SECRET=$(openssl rand -hex 16)
OPENCLAW_IMAGE_TAG=$tag
OPENCLAW_PUBLISH_ADDR=127.0.0.1
OPENCLAW_HTTP_PORT=
OPENCLAW_HTTPS_PORT=
PROMETHEUS_PORT=
ALERTMANAGER_PORT=
OPENCLAW_TLS_DIR=$tmp/tls
RUST_LOG=info
EOF
# The env file decides, not variables this shell happens to carry.
unset OPENCLAW_API_TOKEN OPENCLAW_CLUSTER_SECRET OPENCLAW_IMAGE_TAG OPENCLAW_PUBLISH_ADDR \
  OPENCLAW_HTTP_PORT OPENCLAW_HTTPS_PORT PROMETHEUS_PORT ALERTMANAGER_PORT OPENCLAW_TLS_DIR RUST_LOG
step "starting compose project $proj"
stack_up=1
"${dc[@]}" up -d >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; fail "compose up"; }
port_of() { "${dc[@]}" port "$1" "$2" | tail -n1 | sed 's/.*://'; }
http_port="$(port_of nginx 80)"
https_port="$(port_of nginx 443)"
prom_port="$(port_of prometheus 9090)"
[ -n "$http_port" ] && [ -n "$https_port" ] && [ -n "$prom_port" ] || fail "no published ports"
base="http://127.0.0.1:$http_port"
tls_base="https://openclaw.example.com:$https_port"
tls=(--cacert "$tmp/tls/openclaw.crt" --resolve "openclaw.example.com:$https_port:127.0.0.1")
prom="http://127.0.0.1:$prom_port"
step "nginx on 127.0.0.1:$http_port (TLS :$https_port), Prometheus on 127.0.0.1:$prom_port"

auth=(-H "Authorization: Bearer $token")
# json EXPR: evaluate a Python expression over the JSON on stdin (as `j`); prints the result.
json() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }

# 3. Through nginx.
deadline=$(( $(date +%s) + 120 ))
while :; do
  st="$(curl -sS -m 5 "${auth[@]}" "$base/api/cluster" 2>/dev/null || true)"
  alive="$(json 'sum(1 for n in j.get("nodes",[]) if n.get("alive")) if j.get("leader") else 0' <<<"$st" 2>/dev/null || echo 0)"
  [ "$alive" = 3 ] && break
  [ "$(date +%s)" -lt "$deadline" ] || fail "the cluster did not form (3 alive nodes and a leader) in 120s: $st"
  sleep 1
done
leader="$(json 'j["leader"]' <<<"$st")"
step "cluster formed: 3 nodes alive, leader node $leader"
# The compose file's header command.
"${dc[@]}" exec -T gateway-1 openclaw-node status > "$tmp/status.txt" 2>&1 \
  && grep -q "^Cluster: leader $leader " "$tmp/status.txt" \
  || fail "\`exec gateway-1 openclaw-node status\`: $(cat "$tmp/status.txt")"
sed 's/^/    /' "$tmp/status.txt" | head -n 8

resp="$(curl -sS -m 20 "${tls[@]}" "${auth[@]}" -w '\n%{http_code} %{http_version}' \
  -D "$tmp/headers" -H 'Content-Type: application/json' -H 'Idempotency-Key: smoke-first' \
  -d '{"input": "smoke test: say hello"}' "$tls_base/api/tasks")"
code_ver="$(tail -n1 <<<"$resp")"
[ "${code_ver%% *}" = 202 ] || fail "POST /api/tasks over TLS: $resp"
[ "${code_ver##* }" = 2 ] || fail "TLS server did not speak HTTP/2 (got ${code_ver##* })"
grep -qi '^strict-transport-security:' "$tmp/headers" || fail "no Strict-Transport-Security header"
task="$(head -n1 <<<"$resp" | json 'j["id"]')"
v="$(curl -sS -m 40 "${tls[@]}" "${auth[@]}" "$tls_base/api/tasks/$task?wait=30")"
[ "$(json 'j["status"]' <<<"$v")" = succeeded ] || fail "task $task did not succeed: $v"
again="$(curl -sS -m 20 "${tls[@]}" "${auth[@]}" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: smoke-first' -d '{"input": "smoke test: say hello"}' "$tls_base/api/tasks")"
[ "$(json 'str(j["id"]) + " " + str(j["duplicate"]).lower()' <<<"$again")" = "$task true" ] \
  || fail "the same Idempotency-Key gave another task: $again"
step "task over HTTPS/2 through nginx: $task succeeded; resubmitted with its key: same task"

model="$(curl -sS -m 10 "${auth[@]}" "$base/v1/models" | json 'j["data"][0]["id"]')"
curl -sS -N -m 60 "${auth[@]}" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$model\", \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"smoke test: stream a short answer\"}]}" \
  "$base/v1/chat/completions" > "$tmp/stream"
python3 - "$tmp/stream" <<'EOF' || fail "streamed chat: $(head -c 600 "$tmp/stream")"
import json, sys
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.startswith("data: ")]
assert lines and lines[-1] == "data: [DONE]", "no final [DONE]"
chunks = [json.loads(l[6:]) for l in lines[:-1]]
text = "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in chunks)
assert len(chunks) >= 2 and text, f"{len(chunks)} chunks, text {text!r}"
print(f"    {len(chunks)} chunks, {len(text)} characters")
EOF
step "streamed chat ($model) through nginx"

burst=()
for _ in $(seq 60); do burst+=(-o /dev/null "$base/api/queue"); done
codes="$(curl -s -m 20 -Z --parallel-max 30 -w '%{http_code}\n' "${auth[@]}" "${burst[@]}" | sort | uniq -c | tr -s ' \n' ' ')"
grep -q ' 429' <<<"$codes" && grep -q ' 200' <<<"$codes" || fail "limit_req on /api/: 60 parallel requests answered $codes"
step "60 parallel /api/ requests: $codes(limit_req: 10 r/s, burst 20)"
sleep 2  # let the limit_req bucket refill

# A test double of a node that answers 503 to everything joins the `gateways` alias: nginx must
# retry keyed task submissions elsewhere (the client never sees its 503) and must not replay
# unkeyed ones (each 503 it gave reaches the client).
cat > "$tmp/fake503.conf" <<'CONF'
user nginx nginx;
error_log stderr warn;
pid /run/nginx.pid;
events {}
http {
  log_format k '$request_method $uri key=$http_idempotency_key';
  access_log /dev/stdout k;
  server {
    listen 3000;
    location / {
      add_header Retry-After 1 always;
      return 503 '{"error":{"code":"unavailable","message":"503 test double"}}';
    }
  }
}
CONF
fake="$proj-fake503"
docker run -d --name "$fake" --network "${proj}_default" --network-alias gateways \
  -v "$tmp/fake503.conf:/etc/nginx/nginx.conf:ro" "openclaw-nginx:$tag" >/dev/null
sleep 3  # nginx re-resolves the alias every 2 s
keyed=(); unkeyed=()
for i in $(seq 24); do
  keyed+=("$(curl -s -m 20 -o /dev/null -w '%{http_code}' "${auth[@]}" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: smoke-503-$i" -d "{\"input\": \"keyed $i\"}" "$base/api/tasks")")
  unkeyed+=("$(curl -s -m 20 -o /dev/null -w '%{http_code}' "${auth[@]}" -H 'Content-Type: application/json' \
    -d "{\"input\": \"unkeyed $i\"}" "$base/api/tasks")")
  sleep 0.2  # under limit_req's 10 r/s
done
fake_keyed="$(docker logs "$fake" 2>/dev/null | grep -c '^POST /api/tasks key=smoke-503-' || true)"
fake_unkeyed="$(docker logs "$fake" 2>/dev/null | grep -c '^POST /api/tasks key=-$' || true)"
docker rm -f "$fake" >/dev/null
count() { local want="$1"; shift; printf '%s\n' "$@" | grep -c "^$want\$" || true; }
keyed_ok="$(count 202 "${keyed[@]}")"
unkeyed_ok="$(count 202 "${unkeyed[@]}")"
unkeyed_503="$(count 503 "${unkeyed[@]}")"
[ "$keyed_ok" = 24 ] || fail "keyed submissions with a 503 node in the pool: ${keyed[*]} (it saw $fake_keyed)"
[ "$unkeyed_503" = "$fake_unkeyed" ] && [ $(( unkeyed_ok + unkeyed_503 )) = 24 ] \
  || fail "unkeyed submissions: ${unkeyed[*]}; the 503 node saw $fake_unkeyed (each 503 must reach the client, not be replayed)"
step "503 node in the pool: keyed submissions 24/24 accepted (it refused $fake_keyed, retried elsewhere); unkeyed: its $fake_unkeyed × 503 reached the client"

# 4. Prometheus.
pq() { curl -sS -m 10 --data-urlencode "query=$1" "$prom/api/v1/query"; }
deadline=$(( $(date +%s) + 90 ))
while :; do
  t="$(curl -sS -m 10 "$prom/api/v1/targets?state=active" || true)"
  summary="$(json '" ".join(sorted(x["labels"]["instance"] + "=" + x["health"] for x in j["data"]["activeTargets"]))' <<<"$t" 2>/dev/null || true)"
  n_up="$(grep -o '=up' <<<"$summary" | wc -l)"
  [ "$n_up" = 5 ] && ! grep -q '=down\|=unknown' <<<"$summary" && break
  [ "$(date +%s)" -lt "$deadline" ] || fail "Prometheus targets not all up in 90s: $summary"
  sleep 2
done
step "Prometheus targets: $summary"
am="$(curl -sS -m 10 "$prom/api/v1/alertmanagers" | json 'len(j["data"]["activeAlertmanagers"])')"
[ "$am" -ge 1 ] || fail "Prometheus has no Alertmanager"
# Every dashboard expression has series (rates need two scrapes: wait for them).
sleep 12
python3 - monitoring/grafana/dashboards/openclaw.json "$prom" <<'EOF' || fail "dashboard expressions without data"
import json, sys, urllib.parse, urllib.request
dash, prom = json.load(open(sys.argv[1])), sys.argv[2]
bad = []
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
for e in exprs:
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": e})
    r = json.load(urllib.request.urlopen(url, timeout=10))
    if r["status"] != "success" or not r["data"]["result"]:
        bad.append(e)
for e in bad:
    print("    no data:", e)
print(f"    {len(exprs) - len(bad)}/{len(exprs)} dashboard expressions return series")
sys.exit(1 if bad else 0)
EOF
probes="$(pq 'count(openclaw_requests_total{endpoint=~"health|ready|metrics"}) or vector(0)' | json 'j["data"]["result"][0]["value"][1]')"
scrapes="$(pq 'sum(openclaw_probe_requests_total{endpoint="metrics"})' | json 'j["data"]["result"][0]["value"][1]')"
[ "$probes" = 0 ] && [ "${scrapes%.*}" -gt 0 ] || fail "probes in openclaw_requests_total: $probes series; scrapes counted apart: $scrapes"
step "Alertmanager attached; dashboard series exist; probes counted apart ($scrapes scrapes), not as requests"

# 5. Rolling update.
if [ "${SMOKE_ROLLING:-1}" = 1 ]; then
  step "rolling update (deploy/rolling-update.sh)"
  # (pipefail: a failed update fails the smoke; the script says what was missing)
  COMPOSE_PROJECT_NAME="$proj" OPENCLAW_ENV_FILE="$tmp/env" TIMEOUT=120 deploy/rolling-update.sh | sed 's/^/    /'
  v="$(curl -sS -m 10 "${auth[@]}" "$base/api/tasks/$task")"
  [ "$(json 'j["status"]' <<<"$v")" = succeeded ] || fail "task $task after the rolling update: $v"
  step "rolling update done; task $task still there"
fi

# 6. Kill a follower.
st="$(curl -sS -m 10 "${auth[@]}" "$base/api/cluster")"
victim="$(json '[str(n["address"]).rsplit(":",1)[0] for n in j["nodes"] if n["id"] != j["leader"]][0]' <<<"$st")"
docker kill "$("${dc[@]}" ps -q "$victim")" >/dev/null
step "docker kill $victim (a follower)"
# Requests one after the other, as a client would send them; curl's own timings (no other
# process per request, so the figures are nginx's and the gateways').
t0=$(date +%s%N)
for i in $(seq 60); do
  if [ $(( i % 5 )) = 0 ]; then
    curl -sS -m 30 -o "$tmp/after-$i.json" -w "$i 202 %{http_code} %{time_total}\n" "${auth[@]}" \
      -H 'Content-Type: application/json' -H "Idempotency-Key: smoke-after-kill-$i" \
      -d "{\"input\": \"after the kill $i\"}" "$base/api/tasks" >>"$tmp/after.txt" 2>&1 || true
  else
    curl -sS -m 30 -o /dev/null -w "$i 200 %{http_code} %{time_total}\n" "${auth[@]}" \
      "$base/v1/models" >>"$tmp/after.txt" 2>&1 || true
  fi
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
summary="$(python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
rows = [l.split() for l in open(f"{tmp}/after.txt") if l.strip()]
good = [r for r in rows if len(r) == 4 and r[1] == r[2]]
bad = [" ".join(r) for r in rows if r not in good]
ids = [json.load(open(f"{tmp}/after-{r[0]}.json"))["id"] for r in good if r[1] == "202"]
open(f"{tmp}/after-ids", "w").write("\n".join(ids))
slowest = max((float(r[3]) for r in good), default=0.0)
print(f"{len(good)} {slowest:.3f} {'; '.join(bad)[:600]}")
PY
)"
read -r ok slowest bad <<<"$summary"
[ "$ok" = 60 ] || fail "$ok/60 requests succeeded after the kill: $bad"
mapfile -t ids < "$tmp/after-ids"
step "60/60 requests through nginx after the kill in ${ms} ms (slowest ${slowest} s)"
deadline=$(( $(date +%s) + 90 ))
for t in "${ids[@]}"; do
  while :; do
    v="$(curl -sS -m 40 "${auth[@]}" "$base/api/tasks/$t?wait=20" || true)"
    s="$(json 'j["status"]' <<<"$v" 2>/dev/null || true)"
    [ "$s" = succeeded ] && break
    [ "$s" = failed ] || [ "$s" = cancelled ] && fail "task $t: $v"
    [ "$(date +%s)" -lt "$deadline" ] || fail "task $t not finished 90s after the kill: $v"
  done
done
step "the ${#ids[@]} tasks submitted after the kill succeeded"
if COMPOSE_PROJECT_NAME="$proj" OPENCLAW_ENV_FILE="$tmp/env" TIMEOUT=30 deploy/rolling-update.sh >"$tmp/refused.txt" 2>&1; then
  fail "rolling-update.sh went ahead with $victim down: $(cat "$tmp/refused.txt")"
fi
grep -q "not every member is alive" "$tmp/refused.txt" || fail "rolling-update.sh: $(cat "$tmp/refused.txt")"
step "rolling-update.sh refuses to start with $victim down"

deadline=$(( $(date +%s) + 120 ))
while :; do
  up="$(pq "up{job=\"openclaw-gateway\",instance=\"$victim:3000\"}" | json 'j["data"]["result"][0]["value"][1] if j["data"]["result"] else "none"' 2>/dev/null || echo none)"
  alert="$(pq "ALERTS{alertname=\"GatewayDown\",instance=\"$victim:3000\"}" | json '",".join(r["metric"]["alertstate"] for r in j["data"]["result"])' 2>/dev/null || true)"
  [ "$up" = 0 ] && [ -n "$alert" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || fail "Prometheus: up{$victim}=$up, GatewayDown '${alert}' after 120s"
  sleep 2
done
step "Prometheus: up{instance=\"$victim:3000\"} = 0, GatewayDown $alert"
