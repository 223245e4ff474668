#!/usr/bin/env bash
# fl-sim entry point: bootstraps .venv (pinned by constraints.txt), then dispatches.
#   ./run.sh --clients 5 --task dcgan     run a simulation (same as `./run.sh run ...`)
#   ./run.sh frontier [run flags]         the DP-DCGAN's privacy-utility frontier
#   ./run.sh test [pytest args]           run the test suite
#   ./run.sh lint                         ruff: lint and import order (pyproject [tool.ruff])
#   ./run.sh report|compare|... ARGS      any other `python -m fl_sim` sub-command
#   ./run.sh reference                    regenerate docs/configuration.md and pyproject's
#                                         [tool.flwr.app.config] from the option declarations
set -euo pipefail
cd "$(dirname "$0")"

VENV="${FL_SIM_VENV:-.venv}"
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi

# Reinstall only when what pip installs from changes (tools/install_stamp.py): editing a
# default in pyproject's [tool.flwr.app.config] needs no network.
stamp_of() { "$PYTHON" tools/install_stamp.py .; }

bootstrap() {
  local want; want="$(stamp_of)"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.fl-sim-stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "fl-sim: installing pinned dependencies into $VENV (first run takes a minute) ..." >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  # torch==2.13.0 is pinned in pyproject and constraints: pip never pulls the CUDA build.
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[test]" >&2
  echo "$want" > "$VENV/.fl-sim-stamp"
}

bootstrap
PY="$VENV/bin/python"
export PYTHONUNBUFFERED=1

case "${1:-}" in
  test)
    shift
    exec "$PY" -m pytest "$@"
    ;;
  lint)
    exec "$PY" -m ruff check .
    ;;
  run|frontier|report|compare|sample|audit|deploy|tensorboard|stop-flwr)
    exec "$PY" -m fl_sim "$@"
    ;;
  reference)
    exec "$PY" -m fl_sim.reference
    ;;
  *)
    exec "$PY" -m fl_sim run "$@"
    ;;
esac
