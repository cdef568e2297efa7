#!/usr/bin/env bash
# `make demo` — the README's first command.  Usage: demo.sh BUILD_DIR [QUICK]
#
# For now this is the engine's smoke run: what the build is and runs on (`versa info`), then one
# training step of a 12-layer ViT-S-sized transformer built from engine ops, timed against the
# machine's FMA peak (bench/perf/perf_engine; `make bench` is the full report next to PyTorch).
# The demo grows with the project: synthetic mammograms -> prepare -> pretrain -> extract ->
# distill -> bench will run here end to end (issue 9).  QUICK=1 skips the timed step.
set -euo pipefail
build=${1:-build}
quick=${2:-}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

echo "== versa info"
"$build/versa" info
echo

if [ -f bench/perf/perf_engine.c ] && [ -z "$quick" ]; then
  echo "== engine smoke: one training step (forward + backward) of a 12-layer, 384-wide transformer"
  make --no-print-directory BUILD="$build" "$build/bench/perf/perf_engine" >/dev/null
  "$build/bench/perf/perf_engine" --passes 1 --steps 1 --batch 2 | grep -v '^RESULT'
  echo
elif [ -n "$quick" ]; then
  echo "== QUICK: timed engine step skipped"
fi

cat <<'NOTE'
== note: this demo grows with the project.  Today it shows the engine; the full two-stage recipe on
   synthetic mammograms (versa synth -> prepare -> pretrain -> extract -> distill -> bench) will run
   here as each stage lands.  `versa --help` lists the commands and which are implemented.
NOTE
