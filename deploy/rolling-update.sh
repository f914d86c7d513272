#!/usr/bin/env bash
# deploy/rolling-update.sh [SERVICE...] — restart the gateways of docker-compose.prod.yml one at a
# time on the current image (rebuild it first: deploy/build-images.sh), never more than one down.
#
# For each gateway (default: every `gateway-*` service, the Raft leader last so the cluster
# elects once): stop it, recreate it, then wait until
#   1. the new container answers GET /ready (200), and
#   2. the leader's `openclaw-node status` shows the node alive, with a heartbeat committed after
#      the stop (so from the new process: a stopped node still looks alive for node_lease_ms),
#      last contact within FRESH_MS and replication lag at most MAX_LAG entries,
# before the next. A node that is not back within TIMEOUT stops the update (exit 1) with what was
# missing; the remaining gateways are left untouched. Before starting, every member must be
# alive: restarting one while another is down would lose the quorum (`--force` skips this).
#
# Works with `docker compose` and `docker-compose`; the usual COMPOSE_FILE (default
# docker-compose.prod.yml) and COMPOSE_PROJECT_NAME select the stack, OPENCLAW_ENV_FILE an env
# file other than ./.env.
# Needs python3 (reads the status JSON).
#   TIMEOUT=180 MAX_LAG=64 FRESH_MS=2000 deploy/rolling-update.sh
#   deploy/rolling-update.sh gateway-2
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEOUT="${TIMEOUT:-180}"
MAX_LAG="${MAX_LAG:-64}"
FRESH_MS="${FRESH_MS:-2000}"
force=0
services=()
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "rolling-update.sh: unknown option $a" >&2; exit 2 ;;
    *) services+=("$a") ;;
  esac
done

if docker compose version >/dev/null 2>&1; then dc=(docker compose); else dc=(docker-compose); fi
if [ -n "${OPENCLAW_ENV_FILE:-}" ]; then dc+=(--env-file "$OPENCLAW_ENV_FILE"); fi
dc+=(-f "${COMPOSE_FILE:-docker-compose.prod.yml}")
if [ -n "${COMPOSE_PROJECT_NAME:-}" ]; then dc+=(-p "$COMPOSE_PROJECT_NAME"); fi

say() { printf '[rolling-update] %s\n' "$*"; }
die() { printf '[rolling-update] FAILED: %s\n' "$*" >&2; exit 1; }
now_s() { date +%s; }

# The compose project's name (label of its containers), found once: `docker ps` with label
# filters answers in milliseconds where each compose v1 call takes a second.
project=""
# cid_of SERVICE: its container (running or not).
cid_of() {
  if [ -z "$project" ]; then "${dc[@]}" ps -q "$1" 2>/dev/null | head -n1; return; fi
  docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" | head -n1
}

# status_json CONTAINER: `openclaw-node status --json` asked of that node (its token is in its env).
status_json() {
  timeout 10 docker exec "$1" /usr/local/bin/openclaw-node status --node http://127.0.0.1:3000 --json 2>/dev/null
}

# Any running gateway container other than $1 (for asking the cluster while $1 is down).
other_gateway() {
  local s c
  for s in $all; do
    [ "$s" = "$1" ] && continue
    c="$(cid_of "$s")"
    if [ -n "$c" ] && [ "$(docker inspect -f '{{.State.Running}}' "$c" 2>/dev/null)" = true ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# py EXPR-SCRIPT: run python3 on the status JSON from stdin.
py() { python3 -c "$1" "${@:2}"; }

# leader_service JSON: the compose service (host part of the leader's cluster address).
leader_service() {
  py 'import json,sys
s=json.load(sys.stdin)
for n in s.get("nodes",[]):
    if n.get("id")==s.get("leader"):
        print(str(n.get("address","")).rsplit(":",1)[0])'
}

all="$("${dc[@]}" config --services | grep '^gateway-' | sort -V || true)"
[ -n "$all" ] || die "no gateway-* services in ${COMPOSE_FILE:-docker-compose.prod.yml}"
first="$(cid_of "$(head -n1 <<<"$all")")"
[ -n "$first" ] || die "the stack is not running (no container for $(head -n1 <<<"$all"))"
project="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$first")"
[ ${#services[@]} -gt 0 ] || read -r -a services <<<"$(echo $all)"

asker="$(other_gateway "")" || die "no gateway is running"
st="$(status_json "$asker")" || die "cannot read the cluster status from $asker"
if [ "$force" = 0 ]; then
  down="$(py 'import json,sys
s=json.load(sys.stdin)
print(" ".join(str(n.get("address")) for n in s.get("nodes",[]) if not n.get("alive")))' <<<"$st")"
  [ -z "$down" ] || die "not every member is alive ($down): a restart now could lose the quorum (--force to go on)"
fi
leader="$(leader_service <<<"$st")"
# The leader last: one election for the whole update.
ordered=()
for s in "${services[@]}"; do [ "$s" = "$leader" ] || ordered+=("$s"); done
for s in "${services[@]}"; do [ "$s" = "$leader" ] && ordered+=("$s"); done
say "order: ${ordered[*]} (leader: ${leader:-none})"

for svc in "${ordered[@]}"; do
  started=$(now_s)
  old="$(cid_of "$svc")"
  say "$svc: stopping ${old:0:12}"
  "${dc[@]}" stop -t 20 "$svc" >/dev/null 2>&1 || true
  # A heartbeat stamped at or after this moment comes from the new process. The leader stamps
  # heartbeats with its clock: read the clock in a gateway container (rounded up to the second).
  ref="$(other_gateway "$svc" || true)"
  if [ -n "$ref" ] && t="$(timeout 10 docker exec "$ref" /bin/busybox date +%s 2>/dev/null)"; then
    t0_ms=$(( (t + 1) * 1000 ))
  else
    t0_ms=$(( ($(now_s) + 1) * 1000 ))
  fi
  "${dc[@]}" up -d --no-deps --force-recreate "$svc" >/dev/null 2>&1 || die "$svc: could not be recreated"
  cid="$(cid_of "$svc")"
  [ -n "$cid" ] || die "$svc: no container after recreate"

  deadline=$(( started + TIMEOUT ))
  # (busybox wget -T crashes: the time limit is timeout's)
  until timeout 5 docker exec "$cid" /bin/busybox wget -q -O /dev/null http://127.0.0.1:3000/ready 2>/dev/null; do
    [ "$(now_s)" -lt "$deadline" ] || die "$svc: /ready did not answer 200 within ${TIMEOUT}s (docker logs $cid)"
    sleep 0.5
  done
  say "$svc: /ready after $(( $(now_s) - started ))s"

  why="no status yet"
  while :; do
    if [ "$(now_s)" -ge "$deadline" ]; then
      die "$svc: not back in the cluster within ${TIMEOUT}s: $why"
    fi
    asker="$(other_gateway "$svc" || echo "$cid")"
    if st="$(status_json "$asker")"; then
      lsvc="$(leader_service <<<"$st")"
      lcid=""
      [ -n "$lsvc" ] && lcid="$(cid_of "$lsvc")"
      if [ -z "$lcid" ]; then
        why="no leader"
      elif lst="$(status_json "$lcid")"; then
        why="$(py 'import json,sys
s=json.load(sys.stdin)
svc,t0,fresh,maxlag=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4])
me=[n for n in s.get("nodes",[]) if str(n.get("address","")).rsplit(":",1)[0]==svc]
if s.get("leader")!=s.get("node_id"):
    print("asked node is not the leader any more")
elif not me:
    print("not a member")
else:
    n=me[0]; lag=n.get("lag"); hb=n.get("last_heartbeat_ms") or 0; lc=n.get("last_contact_ms")
    if not n.get("alive"): print("not alive")
    elif hb<t0: print("no heartbeat since the restart (last %d ms before it)"%(t0-hb))
    elif lc is None or lc>fresh: print("last contact %s ms ago"%lc)
    elif n.get("id")!=s.get("leader") and (lag is None or lag>maxlag): print("replication lag %s entries"%lag)
    else: print("ok lag=%s contact=%sms"%(0 if lag is None else lag, lc))' "$svc" "$t0_ms" "$FRESH_MS" "$MAX_LAG" <<<"$lst")" \
          || why="unreadable status"
        if [[ "$why" == ok* ]]; then
          say "$svc: back after $(( $(now_s) - started ))s (${why#ok }, leader $lsvc)"
          break
        fi
      else
        why="leader $lsvc did not answer"
      fi
    else
      why="no gateway answers status"
    fi
    sleep 0.5
  done
done
say "done: ${ordered[*]}"
