#!/usr/bin/env bash
# ops/kafka/kafka.sh - one single-node Apache Kafka broker (KRaft, combined
# broker+controller) for riskmon's tests. No Docker, no Kafka tarball, no Kafka
# shell scripts: the broker jars come from Maven Central via pom.xml (next to
# this script) and are cached per version. Adapted from
# ../shared/reference/kafka/start-kafka.sh (see RECIPE.md there for the why).
#
# Usage: kafka.sh [start|stop|status|fetch|logs|reset]
#   start   fetch jars if missing, render config, format storage once, start
#           the broker in the background (no-op if this instance already runs),
#           wait until ready, print "127.0.0.1:<port>" on stdout (all else on
#           stderr), so:   BOOTSTRAP="$(KAFKA_PORT=... KAFKA_WORK_DIR=... kafka.sh)"
#   stop    SIGTERM the broker of this work dir (by PID, after checking the
#           PID's command line is ours), SIGKILL after KAFKA_STOP_TIMEOUT s.
#   status  exit 0 and print the address if running, 1 otherwise.
#   fetch   only download the jars into the cache.
#   logs    print the last N (default 100) lines of the broker log.
#   reset   stop and delete the work dir (only if it carries our marker).
#
# Environment (all optional):
#   KAFKA_VERSION          Kafka release (default 4.1.2; 3.9.x works with profile kafka3)
#   KAFKA_PORT             client listener port (default: a free port)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default: a free port)
#   KAFKA_WORK_DIR         config/data/logs of this instance
#                          (default ${TMPDIR:-/tmp}/riskmon-kafka-$KAFKA_PORT)
#   KAFKA_LIB_DIR          jar cache (default ${XDG_CACHE_HOME:-~/.cache}/riskmon/kafka/lib-$KAFKA_VERSION)
#   KAFKA_HEAP_OPTS        default "-Xms128m -Xmx512m"
#   KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS   as in Kafka's bin/kafka-run-class.sh
#   KAFKA_LOG_LEVEL        root log level of the broker (default INFO)
#   KAFKA_EXTRA_CONFIG     extra "key=value" lines appended to server.properties
#   KAFKA_FORMAT_ARGS      extra args for "StorageTool format" (first format only)
#   KAFKA_READY_TIMEOUT    seconds to wait for readiness (default 180)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM (default 30)
#   MVN_REPO_LOCAL         Maven local repository (default: Maven's, ~/.m2/repository)
#   JAVA (or JAVA_HOME), MVN, PYTHON   executables (default java, mvn, python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
HOST=127.0.0.1
PYTHON="${PYTHON:-python3}"
MVN="${MVN:-mvn}"
if [[ -n "${JAVA:-}" ]]; then :; elif [[ -n "${JAVA_HOME:-}" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

log() { printf '[kafka.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found (install it or set ${2:-its variable})"; }

cmd="${1:-start}"
PORT="${KAFKA_PORT:-}"
CPORT="${KAFKA_CONTROLLER_PORT:-}"
# An existing instance remembers its ports, so stop/status/restart need only the work dir.
if [[ -z "$PORT" && -n "${KAFKA_WORK_DIR:-}" && -f "$KAFKA_WORK_DIR/ports" ]]; then
  read -r PORT CPORT <"$KAFKA_WORK_DIR/ports"
fi
if [[ -z "$PORT" ]]; then
  case "$cmd" in
    start) mapfile -t _ports < <("$PYTHON" "$HERE/../freeport.py" 2)
           [[ ${#_ports[@]} -eq 2 ]] || die "could not pick free ports"
           PORT="${_ports[0]}"; CPORT="${_ports[1]}" ;;
    fetch) PORT=0 ;;
    *) die "set KAFKA_WORK_DIR (or KAFKA_PORT) to say which broker" ;;
  esac
fi
CPORT="${CPORT:-$((PORT + 1))}"
WORK_DIR="${KAFKA_WORK_DIR:-${TMPDIR:-/tmp}/riskmon-kafka-$PORT}"
LIB_DIR="${KAFKA_LIB_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/riskmon/kafka/lib-$KAFKA_VERSION}"
READY_TIMEOUT="${KAFKA_READY_TIMEOUT:-180}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
LOG_LEVEL="${KAFKA_LOG_LEVEL:-INFO}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
# Kafka's bin/kafka-run-class.sh flags, plus IPv4 preference.
JVM_PERF_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true}"
EXTRA_JVM_OPTS="${KAFKA_OPTS:-}"

DATA_DIR="$WORK_DIR/data"
LOG_DIR="$WORK_DIR/logs"
LOG_FILE="$LOG_DIR/kafka.log"
CFG="$WORK_DIR/server.properties"
PID_FILE="$WORK_DIR/kafka.pid"
MARKER="$WORK_DIR/.riskmon-kafka"     # proves the dir is ours before `reset` deletes it
VERSION_FILE="$WORK_DIR/.kafka-version"
BOOTSTRAP="$HOST:$PORT"

if [[ "${KAFKA_VERSION%%.*}" -ge 4 ]]; then
  MVN_PROFILE="-Pkafka4"
  LOG_CFG="$WORK_DIR/log4j2.properties"
  TOOL_LOG_CFG="$WORK_DIR/log4j2-tools.properties"
  LOG_OPT="-Dlog4j2.configurationFile=$LOG_CFG"
  TOOL_LOG_OPT="-Dlog4j2.configurationFile=$TOOL_LOG_CFG"
  MIN_JAVA=17   # Kafka 4.x brokers and tools require Java 17
else
  MVN_PROFILE="-Pkafka3"
  LOG_CFG="$WORK_DIR/log4j.properties"
  TOOL_LOG_CFG="$WORK_DIR/log4j-tools.properties"
  LOG_OPT="-Dlog4j.configuration=file:$LOG_CFG"
  TOOL_LOG_OPT="-Dlog4j.configuration=file:$TOOL_LOG_CFG"
  MIN_JAVA=11
fi

java_major() { "$JAVA" -version 2>&1 | sed -n -E 's/.*version "(1\.)?([0-9]+).*/\2/p' | head -n1; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
read_pid() { [[ -f "$PID_FILE" ]] && tr -dc '0-9' <"$PID_FILE" || true; }

is_running() {  # the PID file's process is alive and really is kafka.Kafka with our config
  local pid; pid="$(read_pid)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "kafka.Kafka $CFG"
}

fetch_jars() {
  [[ -f "$LIB_DIR/.complete" ]] && return 0
  need "$MVN" MVN
  mkdir -p "$(dirname "$LIB_DIR")"
  exec 8>"$LIB_DIR.lock"; flock 8          # concurrent first runs fetch once
  if [[ -f "$LIB_DIR/.complete" ]]; then exec 8>&-; return 0; fi
  local tmp="$LIB_DIR.tmp.$$" t0=$SECONDS mvn_args=(-q -B)
  [[ -n "${MVN_REPO_LOCAL:-}" ]] && mvn_args+=("-Dmaven.repo.local=$MVN_REPO_LOCAL")
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIB_DIR (first run only)"
  "$MVN" "${mvn_args[@]}" -f "$HERE/pom.xml" "$MVN_PROFILE" \
      -Dkafka.version="$KAFKA_VERSION" -Dkafka.lib.dir="$tmp" \
      dependency:copy-dependencies 2>&1 | sed -e $'s/\e\\[[0-9;]*m//g' >&2 \
    || { rm -rf "$tmp"; die "Maven could not fetch kafka_2.13:$KAFKA_VERSION (try KAFKA_VERSION=4.1.1 or 3.9.1)"; }
  compgen -G "$tmp/*kafka_2.13-$KAFKA_VERSION.jar" >/dev/null \
    || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after the Maven run"; }
  rm -rf "$LIB_DIR"; mv "$tmp" "$LIB_DIR"; touch "$LIB_DIR/.complete"
  log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars, $(du -sh "$LIB_DIR" | cut -f1) in $((SECONDS - t0)) s"
  exec 8>&-
}

write_configs() {
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  local node_id
  node_id="$(sed -n -E 's/^[[:space:]]*node\.id[[:space:]]*=[[:space:]]*([0-9]+).*/\1/p' "$HERE/server.properties" | tail -n1)"
  {
    grep -v -E '^[[:space:]]*(listeners|advertised\.listeners|controller\.quorum\.voters|controller\.quorum\.bootstrap\.servers|log\.dirs?)[[:space:]]*=' "$HERE/server.properties" || true
    echo
    echo "# ---- written by ops/kafka/kafka.sh ----"
    echo "listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT"
    echo "advertised.listeners=PLAINTEXT://$HOST:$PORT"
    echo "controller.quorum.voters=${node_id:-1}@$HOST:$CPORT"
    echo "log.dirs=$DATA_DIR"
    if [[ -n "${KAFKA_EXTRA_CONFIG:-}" ]]; then printf '%s\n' "$KAFKA_EXTRA_CONFIG"; fi
  } >"$CFG.tmp"
  mv "$CFG.tmp" "$CFG"
  echo "$PORT $CPORT" >"$WORK_DIR/ports"

  if [[ "${KAFKA_VERSION%%.*}" -ge 4 ]]; then
    # Log4j 2 "properties" format: needs no extra jar (YAML would need jackson-dataformat-yaml).
    cat >"$LOG_CFG" <<EOF
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $LOG_LEVEL
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.channel.name = kafka.network.RequestChannel\$
logger.channel.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
    cat >"$TOOL_LOG_CFG" <<EOF
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
  else
    cat >"$LOG_CFG" <<EOF
log4j.rootLogger=$LOG_LEVEL, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel\$=WARN
log4j.logger.state.change.logger=WARN
EOF
    cat >"$TOOL_LOG_CFG" <<EOF
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
  fi
}

format_storage() {
  if [[ -f "$VERSION_FILE" && "$(cat "$VERSION_FILE")" != "$KAFKA_VERSION" ]]; then
    log "data in $DATA_DIR was formatted by Kafka $(cat "$VERSION_FILE"); wiping it for $KAFKA_VERSION"
    rm -rf "$DATA_DIR"; mkdir -p "$DATA_DIR"
  fi
  [[ -f "$DATA_DIR/meta.properties" ]] && return 0
  # Cluster id in Uuid.randomUuid() format: URL-safe base64 of 16 bytes, no padding, no leading '-'.
  local cid
  cid="$("$PYTHON" -c 'import base64,uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"):
        print(s); break')"
  log "formatting $DATA_DIR (cluster id $cid)"
  # No --standalone: the config uses the static controller.quorum.voters.
  # shellcheck disable=SC2086  # KAFKA_FORMAT_ARGS is a word list on purpose
  "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 "$TOOL_LOG_OPT" -cp "$LIB_DIR/*" kafka.tools.StorageTool \
      format -t "$cid" -c "$CFG" --ignore-formatted ${KAFKA_FORMAT_ARGS:-} >&2 9>&-
  echo "$KAFKA_VERSION" >"$VERSION_FILE"
}

launch() {
  rm -f "$PID_FILE"
  if [[ -f "$LOG_FILE" ]]; then mv -f "$LOG_FILE" "$LOG_FILE.prev"; fi
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $HOST:$CPORT), log: $LOG_FILE"
  # The inner shell writes its own PID and exec()s java, so the PID file holds
  # the JVM's PID. setsid: Ctrl-C in the terminal does not reach the broker
  # directly; it is stopped by PID from the caller's trap.
  # shellcheck disable=SC2086,SC2016  # *_OPTS word splitting intended; $$/$0/$@ belong to the inner bash
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
      "$JAVA" $HEAP_OPTS $JVM_PERF_OPTS "-Dkafka.logs.dir=$LOG_DIR" "$LOG_OPT" $EXTRA_JVM_OPTS \
      -cp "$LIB_DIR/*" kafka.Kafka "$CFG" \
      >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
  for _ in $(seq 1 50); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
  [[ -s "$PID_FILE" ]] || die "broker process did not start"
}

wait_ready() {
  local pid rc=0; pid="$(read_pid)"
  "$PYTHON" "$HERE/kafka_ready.py" --bootstrap "$BOOTSTRAP" --timeout "$READY_TIMEOUT" \
      ${pid:+--pid "$pid"} --txn || rc=$?
  if [[ $rc -ne 0 ]]; then
    log "broker not ready (probe exit $rc); last lines of $LOG_FILE:"
    tail -n 40 "$LOG_FILE" >&2 || true
    exit 1
  fi
}

do_start() {
  need "$JAVA" JAVA
  need "$PYTHON" PYTHON
  local jv; jv="$(java_major)"
  [[ -n "$jv" && "$jv" -ge "$MIN_JAVA" ]] || die "Kafka $KAFKA_VERSION needs Java >= $MIN_JAVA (found: ${jv:-none})"
  if [[ -d "$WORK_DIR" && ! -f "$MARKER" && -n "$(ls -A "$WORK_DIR")" ]]; then
    die "$WORK_DIR exists, is not empty and was not created by kafka.sh; choose another KAFKA_WORK_DIR"
  fi
  mkdir -p "$WORK_DIR"; touch "$MARKER"
  exec 9>"$WORK_DIR/.lock"; flock 9
  local t0=$SECONDS
  if is_running; then
    log "already running (pid $(read_pid)) on $BOOTSTRAP"
  else
    if [[ -z "${KAFKA_PORT:-}" ]] && { port_open "$PORT" || port_open "$CPORT"; }; then
      # remembered ports of a stopped instance were taken meanwhile: pick new ones
      mapfile -t _ports < <("$PYTHON" "$HERE/../freeport.py" 2)
      PORT="${_ports[0]}"; CPORT="${_ports[1]}"; BOOTSTRAP="$HOST:$PORT"
    fi
    local p; for p in "$PORT" "$CPORT"; do
      if port_open "$p"; then die "port $HOST:$p is already in use by another process"; fi
    done
    fetch_jars
    write_configs
    format_storage
    launch
  fi
  wait_ready
  log "ready after $((SECONDS - t0)) s (pid $(read_pid), $BOOTSTRAP)"
  exec 9>&-
  echo "$BOOTSTRAP"
}

do_stop() {
  local pid; pid="$(read_pid)"
  if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$PID_FILE"; log "not running ($WORK_DIR)"; return 0
  fi
  is_running || die "PID $pid from $PID_FILE is not our kafka.Kafka process; not touching it"
  log "stopping pid $pid (SIGTERM -> controlled shutdown)"
  kill -TERM "$pid"
  local i; for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; log "stopped"; return 0; }
    sleep 0.1
  done
  log "still alive after ${STOP_TIMEOUT}s, sending SIGKILL to $pid"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

case "$cmd" in
  start)  do_start ;;
  stop)   do_stop ;;
  status) if is_running; then log "running (pid $(read_pid))"; echo "$BOOTSTRAP"; else log "not running"; exit 1; fi ;;
  fetch)  fetch_jars; log "jars in $LIB_DIR ($(find "$LIB_DIR" -name '*.jar' | wc -l) jars, $(du -sh "$LIB_DIR" | cut -f1))" ;;
  logs)   tail -n "${2:-100}" "$LOG_FILE" ;;
  reset)  do_stop
          if [[ -f "$MARKER" ]]; then rm -rf "$WORK_DIR"; log "removed $WORK_DIR";
          elif [[ -e "$WORK_DIR" ]]; then die "$WORK_DIR has no $(basename "$MARKER") marker; refusing to delete it"; fi ;;
  *)      die "unknown command '$cmd' (start|stop|status|fetch|logs|reset)" ;;
esac
