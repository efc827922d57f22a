#!/usr/bin/env bash
# ops/stack.sh - the long-lived part of riskmon's local test stack: Kafka (KRaft,
# jars from Maven Central, see ops/kafka/) and Redis, on free 127.0.0.1 ports.
# Prometheus and Alertmanager are NOT started here: the tests start their own
# per-test instances (tests/integration/conftest.py).
#
# Usage: ops/stack.sh up|down|status|logs|env [STACK_DIR] [N]
#   up      start Kafka and Redis (each only if not already running in
#           STACK_DIR), wait until both are ready, write STACK_DIR/env.sh and
#           print it. Services are stopped by PID only.
#   down    stop both (by PID from STACK_DIR), delete their data, keep logs.
#   status  exit 0 if both run.
#   logs    print the last N (default 60) lines of each service log.
#   env     print STACK_DIR/env.sh.
# STACK_DIR defaults to <repo>/.stack/dev (what `make stack-up` uses); `make
# test` uses a fresh <repo>/.stack/run-<time>-<pid> per run, so a test run never
# clashes with a dev stack or with another test run.
#
# Environment: PYTHON (default python3; used for the free-port helper and the
# Kafka readiness probe), KAFKA_VERSION and the other KAFKA_* of ops/kafka/kafka.sh,
# REDIS_SERVER (default redis-server), STACK_OWNER_PID (set by ops/run-tests.sh:
# a later `up` stops the services of runs whose owner died without cleaning up),
# STACK_KEEP_RUNS (default 5: how many old run-* dirs (logs only) to keep).
set -euo pipefail

OPS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$OPS")"
STACK_ROOT="$ROOT/.stack"
PYTHON="${PYTHON:-python3}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
HOST=127.0.0.1

cmd="${1:-}"
STACK_DIR="${2:-$STACK_ROOT/dev}"
case "$STACK_DIR" in /*) ;; *) STACK_DIR="$PWD/$STACK_DIR" ;; esac
KAFKA_DIR="$STACK_DIR/kafka"
REDIS_DIR="$STACK_DIR/redis"
ENV_FILE="$STACK_DIR/env.sh"
MARKER="$STACK_DIR/.riskmon-stack"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

kafka() { KAFKA_WORK_DIR="$KAFKA_DIR" PYTHON="$PYTHON" "$OPS/kafka/kafka.sh" "$@"; }

# ------------------------------------------------------------------ redis
redis_pid() { [[ -f "$REDIS_DIR/redis.pid" ]] && tr -dc '0-9' <"$REDIS_DIR/redis.pid" || true; }
redis_port() { [[ -f "$REDIS_DIR/port" ]] && cat "$REDIS_DIR/port" || true; }

redis_running() {  # the PID file's process is alive and is our redis-server (checked on /proc)
  local pid port; pid="$(redis_pid)"; port="$(redis_port)"
  [[ -n "$pid" && -n "$port" ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE "redis-server.*$HOST:$port\b"
}

redis_ping() {  # PONG over a raw TCP connection (no redis-cli needed)
  local port="$1" reply=""
  { exec 7<>"/dev/tcp/$HOST/$port"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&7
  IFS= read -r -t 2 reply <&7 || true
  exec 7>&-
  [[ "$reply" == "+PONG"* ]]
}

redis_start() {
  command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found (make deps installs it)"
  mkdir -p "$REDIS_DIR"
  if redis_running; then log "redis already running (pid $(redis_pid), port $(redis_port))"; return 0; fi
  local port; port="$("$PYTHON" "$OPS/freeport.py" 1)"
  echo "$port" >"$REDIS_DIR/port"
  rm -f "$REDIS_DIR/redis.pid"
  # No persistence (tests rebuild everything), loopback only, own dir and log.
  # The inner shell records its PID, then exec()s redis-server (PID stays the same).
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$REDIS_DIR/redis.pid" \
    "$REDIS_SERVER" --bind "$HOST" --port "$port" --save "" --appendonly no \
    --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" --daemonize no \
    --protected-mode yes --databases 16 --maxmemory 256mb \
    >>"$REDIS_DIR/redis.out" 2>&1 </dev/null &
  local i; for ((i = 0; i < 150; i++)); do
    if redis_ping "$port"; then log "redis ready on $HOST:$port (pid $(redis_pid))"; return 0; fi
    local pid; pid="$(redis_pid)"
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  log "redis did not become ready; last log lines:"
  tail -n 30 "$REDIS_DIR/redis.log" "$REDIS_DIR/redis.out" >&2 2>/dev/null || true
  return 1
}

redis_stop() {
  local pid; pid="$(redis_pid)"
  if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then rm -f "$REDIS_DIR/redis.pid"; return 0; fi
  redis_running || { log "PID $pid is not our redis-server; not touching it"; return 1; }
  log "stopping redis (pid $pid)"
  kill -TERM "$pid"
  local i; for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$REDIS_DIR/redis.pid"; return 0; }
    sleep 0.1
  done
  log "redis still alive after 10 s, SIGKILL $pid"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$REDIS_DIR/redis.pid"
}

# ------------------------------------------------------------------ housekeeping
reap_orphans() {
  # Runs of `make test` that were killed (SIGKILL, lost terminal) before their
  # trap ran: stop their services (by PID, after the same checks) so ports and
  # memory come back. Then keep only the newest STACK_KEEP_RUNS run dirs.
  [[ -d "$STACK_ROOT" ]] || return 0
  local d owner
  for d in "$STACK_ROOT"/run-*; do
    [[ -d "$d" && -f "$d/owner.pid" && "$d" != "$STACK_DIR" ]] || continue
    owner="$(tr -dc '0-9' <"$d/owner.pid")"
    if [[ -n "$owner" ]] && kill -0 "$owner" 2>/dev/null; then continue; fi
    if [[ -f "$d/kafka/kafka.pid" || -f "$d/redis/redis.pid" ]]; then
      log "reaping services of an abandoned run: $d"
      "$0" down "$d" || true
    fi
  done
  local keep="${STACK_KEEP_RUNS:-5}" old
  # shellcheck disable=SC2012  # names are ours: run-<UTC time>-<pid>
  old="$(ls -1d "$STACK_ROOT"/run-* 2>/dev/null | sort -r | tail -n +"$((keep + 1))")" || true
  for d in $old; do
    [[ "$d" != "$STACK_DIR" && -f "$d/.riskmon-stack" ]] || continue
    [[ ! -f "$d/kafka/kafka.pid" && ! -f "$d/redis/redis.pid" ]] || continue
    rm -rf "$d"
  done
}

write_env() {
  local bootstrap="$1"
  cat >"$ENV_FILE.tmp" <<EOF
# riskmon test stack in $STACK_DIR - source me: . $ENV_FILE
export RISKMON_TEST_KAFKA_BOOTSTRAP=$bootstrap
export RISKMON_TEST_REDIS_URL=redis://$HOST:$(redis_port)/0
export RISKMON_TEST_STACK_DIR=$STACK_DIR
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

do_up() {
  local t0=$SECONDS
  mkdir -p "$STACK_DIR"; touch "$MARKER"
  if [[ -n "${STACK_OWNER_PID:-}" ]]; then echo "$STACK_OWNER_PID" >"$STACK_DIR/owner.pid"; fi
  reap_orphans
  redis_start || die "redis failed to start (logs in $REDIS_DIR)"
  local bootstrap
  bootstrap="$(kafka start)" || die "kafka failed to start (logs in $KAFKA_DIR/logs)"
  write_env "$bootstrap"
  log "stack up in $((SECONDS - t0)) s: kafka $bootstrap, redis $HOST:$(redis_port); env: $ENV_FILE"
  cat "$ENV_FILE"
}

do_down() {
  [[ -d "$STACK_DIR" ]] || { log "no stack in $STACK_DIR"; return 0; }
  [[ -f "$MARKER" ]] || die "$STACK_DIR was not created by ops/stack.sh; not touching it"
  local rc=0
  redis_stop || rc=1
  if [[ -d "$KAFKA_DIR" ]]; then kafka stop || rc=1; fi
  if [[ "${STACK_KEEP_DATA:-0}" != 1 ]]; then rm -rf "$KAFKA_DIR/data"; fi
  rm -f "$ENV_FILE"
  return $rc
}

do_logs() {
  local n="${1:-60}" f
  for f in "$KAFKA_DIR/logs/kafka.log" "$REDIS_DIR/redis.log" "$REDIS_DIR/redis.out"; do
    [[ -s "$f" ]] || continue
    printf '\n===== last %s lines of %s =====\n' "$n" "$f"
    tail -n "$n" "$f"
  done
}

case "$cmd" in
  up)     do_up ;;
  down)   do_down ;;
  status) redis_running && kafka status >/dev/null 2>&1 && { log "up ($STACK_DIR)"; exit 0; }
          log "not (fully) running ($STACK_DIR)"; exit 1 ;;
  logs)   do_logs "${3:-60}" ;;
  env)    cat "$ENV_FILE" ;;
  *)      die "usage: $0 up|down|status|logs|env [STACK_DIR] [N]" ;;
esac
