#!/usr/bin/env bash
# ops/run-tests.sh - the body of `make test` (after `deps` and `venv`):
#   1. start Kafka + Redis for this run only (fresh .stack/run-<time>-<pid>,
#      free ports, so a second run or a `make stack-up` stack never clashes);
#   2. `make lint` (unless LINT=0);
#   3. pytest with RISKMON_REQUIRE_SERVICES=1 (integration tests fail, never
#      skip, if a server is missing) and the stack's addresses in the env;
#   4. always stop the stack (trap, by PID) - also on failure or Ctrl-C;
#      on failure print the tail of the service logs.
# Exit code: pytest's if it failed (5 = no tests collected is a failure too),
# else lint's.
#
# Environment: VENV (default <repo>/.venv), PYTEST_ARGS (extra pytest args,
# shell-quoted, e.g. "tests/integration -k kafka"), PYTEST_TIMEOUT (per test,
# default 600 s), LINT (1), and everything ops/stack.sh understands.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
RUN_DIR="$ROOT/.stack/run-$(date -u +%Y%m%dT%H%M%SZ)-$$"
T0=$SECONDS

say() { printf '\n[make test] %s\n' "$*" >&2; }

stopped=0
stop_stack() {
  [[ $stopped == 1 ]] && return 0
  stopped=1
  "$ROOT/ops/stack.sh" down "$RUN_DIR" || say "WARNING: stopping the stack in $RUN_DIR failed"
}
PYTEST_PID=""
# shellcheck disable=SC2329  # invoked from the traps below
on_signal() {  # $1 = exit code. Let pytest tear down its per-test servers, then stop the stack.
  say "interrupted (exit $1)"
  if [[ -n "$PYTEST_PID" ]] && kill -0 "$PYTEST_PID" 2>/dev/null; then
    kill -TERM "$PYTEST_PID" 2>/dev/null  # tests/conftest.py turns SIGTERM into KeyboardInterrupt
    wait "$PYTEST_PID"
  fi
  exit "$1"
}
trap stop_stack EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

[[ -x "$PY" ]] || { say "no virtualenv at $VENV (run: make venv)"; exit 1; }

# The engine's numba kernels compile once per machine (~20 s of one core, then cached on disk):
# do it while the stack starts, so no test's timeout pays for the compiler.
say "compiling the engine's kernels (riskmon warm-up), in the background"
mkdir -p "$ROOT/.stack"
"$VENV/bin/riskmon" warm-up </dev/null >"$ROOT/.stack/warm-up.log" 2>&1 &
WARM_PID=$!

say "starting Kafka + Redis in $RUN_DIR"
if ! STACK_OWNER_PID=$$ PYTHON="$PY" "$ROOT/ops/stack.sh" up "$RUN_DIR" >/dev/null; then
  say "the test stack did not come up; service logs:"
  "$ROOT/ops/stack.sh" logs "$RUN_DIR" 80 >&2 || true
  exit 1
fi
say "stack ready after $((SECONDS - T0)) s"
# shellcheck source=/dev/null
. "$RUN_DIR/env.sh"
export RISKMON_REQUIRE_SERVICES=1

if ! wait "$WARM_PID"; then
  say "riskmon warm-up failed:"; cat "$ROOT/.stack/warm-up.log" >&2; exit 1
fi
say "$(tail -n 1 "$ROOT/.stack/warm-up.log")"

lint_rc=0
if [[ "${LINT:-1}" != 0 ]]; then
  say "lint"
  make --no-print-directory -C "$ROOT" lint VENV="$VENV" || lint_rc=$?
fi

declare -a extra=()
if [[ -n "${PYTEST_ARGS:-}" ]]; then eval "extra=(${PYTEST_ARGS})"; fi
say "pytest ${extra[*]:-}"
# In the background + `wait`, so a signal to this script is handled at once (a trap
# would otherwise wait for pytest to finish); on_signal forwards it to pytest.
"$PY" -m pytest --timeout="${PYTEST_TIMEOUT:-600}" "${extra[@]}" </dev/null &
PYTEST_PID=$!
wait "$PYTEST_PID"
rc=$?
PYTEST_PID=""

if [[ $rc -ne 0 ]]; then
  [[ $rc -eq 5 ]] && say "pytest collected no tests (exit 5) - that is a failure"
  say "pytest failed (exit $rc); tail of the service logs ($RUN_DIR):"
  "$ROOT/ops/stack.sh" logs "$RUN_DIR" 60 >&2 || true
fi
stop_stack
if [[ $rc -eq 0 && $lint_rc -ne 0 ]]; then
  say "tests passed but lint failed (exit $lint_rc)"
  rc=$lint_rc
fi
say "done in $((SECONDS - T0)) s, exit $rc (service logs kept in $RUN_DIR)"
exit $rc
