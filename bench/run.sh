#!/usr/bin/env bash
# Performance report (not a test): the engine's perf_engine next to the same computation in
# PyTorch, on the same threads and environment.  Called by `make bench`.
# Usage: bash bench/run.sh BUILD_DIR [--passes P] [--steps S] [--batch B]
# Threads: VERSA_THREADS, else OMP_NUM_THREADS, else nproc (the same count for both sides).
# BENCH_ROUNDS (default 2): engine and PyTorch run alternately this many times and the summary
# keeps each side's best, so a burst of load from other processes does not decide the ratio.
set -euo pipefail
build=${1:-build}
shift || true
. "$(dirname "$0")/common.sh"

echo "== versamammo.c performance report, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "   cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores," \
     "flags: $(grep -m1 -ow -e avx512f -e avx2 -e fma /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share the cores: compare ratios)"
echo "   threads: $threads; OPENBLAS_CORETYPE: ${preset:-(unset)} -> ${OPENBLAS_CORETYPE:-(auto)}; rounds: $rounds"
echo

for r in $(seq 1 "$rounds"); do
  if [ "$r" = 1 ]; then
    "$build/bench/perf/perf_engine" "$@" | tee "$out/engine.$r.txt"
    echo
  else
    "$build/bench/perf/perf_engine" "$@" >"$out/engine.$r.txt"
  fi
  if [ $have_torch = 1 ]; then
    if [ "$r" = 1 ]; then
      LD_PRELOAD=$preload "$python" bench/perf/perf_engine_torch.py --threads "$threads" "$@" | tee "$out/torch.$r.txt"
    else
      LD_PRELOAD=$preload "$python" bench/perf/perf_engine_torch.py --threads "$threads" "$@" >"$out/torch.$r.txt"
    fi
  else
    [ "$r" = 1 ] && echo "(no $python with torch: PyTorch column skipped)"
    : >"$out/torch.$r.txt"
  fi
  if [ "$r" -gt 1 ]; then
    echo "   round $r: engine $(awk '$3=="step_s"{print $4}' "$out/engine.$r.txt") s/step" \
         "($(awk '$3=="step_cpu_s"{print $4}' "$out/engine.$r.txt") CPU-s)," \
         "pytorch $(awk '$3=="step_s"{print $4}' "$out/torch.$r.txt") s/step" \
         "($(awk '$3=="step_cpu_s"{print $4}' "$out/torch.$r.txt") CPU-s)"
  fi
done

# best over the rounds of one RESULT key: lowest for times and memory, highest for rates
get() {  # side key lower|higher
  cat "$out/$1".*.txt | awk -v k="$2" -v b="$3" '$1 == "RESULT" && $3 == k {
      v = $4 + 0; if (!n++ || (b == "lower" ? v < best : v > best)) { best = v; s = $4 } }
    END { if (n) print s }'
}
row() {  # label key unit lower|higher
  local e t
  e=$(get engine "$2" "$4"); t=$(get torch "$2" "$4")
  awk -v l="$1" -v e="${e:-}" -v t="${t:-}" -v u="$3" -v b="$4" 'BEGIN {
    r = (e != "" && t != "" && e + 0 > 0 && t + 0 > 0) ? (b == "lower" ? t / e : e / t) : 0
    printf "   %-40s %10s %10s %9s\n", l " (" u ")", (e == "" ? "-" : e), (t == "" ? "-" : t),
           (r ? sprintf("%.2fx", r) : "-") }'
}
echo
echo "== summary, best of $rounds round(s) (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '   %-40s %10s %10s %9s\n' "" "engine" "pytorch" "engine is"
row "training step, wall" step_s "s" lower
row "training step, CPU time" step_cpu_s "CPU-s" lower
row "throughput, wall" images_per_s "images/s" higher
row "throughput, core" images_per_s_core "images/s" higher
row "achieved, core" step_gflops "GFLOP/s" higher
row "linear fwd+bwd, core" linear_gflops "GFLOP/s" higher
row "linear fwd+bwd, wall" linear_gflops_wall "GFLOP/s" higher
row "attention fwd+bwd, core" attention_gflops "GFLOP/s" higher
row "attention fwd+bwd, wall" attention_gflops_wall "GFLOP/s" higher
row "peak RSS" peak_rss_mb "MB" lower
echo "   (core = work / (CPU-seconds / threads): the rate with the cores to ourselves; wall depends on"
echo "    the load from other processes at the moment each side ran)"
echo "   FMA peak $(get engine peak_gflops higher) GFLOP/s core; standalone sgemm $(get engine sgemm_gflops higher)" \
     "GFLOP/s core; op_linear = $(get engine linear_vs_sgemm_pct higher)% of raw sgemm's rate"
# the sgemm split of the engine's fastest round
best_engine=$(for f in "$out"/engine.*.txt; do awk -v f="$f" '$3 == "step_cpu_s" {print $4, f}' "$f"; done | sort -g | head -1 | cut -d' ' -f2)
if [ -n "$best_engine" ]; then
  echo "   engine step: $(awk '$3 == "sgemm_share_pct" {print $4}' "$best_engine")% of its CPU time in sgemm, running at" \
       "$(awk '$3 == "sgemm_in_step_pct" {print $4}' "$best_engine")% of its standalone rate"
fi

# The per-area reports, each with its own PyTorch side by side (same threads and environment):
# models (issue 3 and the stage-2 student step), stage-1 pretraining + MPI scaling, data loading
# and synthesis.  BENCH_ONLY=engine skips them.
if [ "${BENCH_ONLY:-all}" != engine ]; then
  # run_models.sh alone also covers the pretrain step and the data path; here those come from
  # their own scripts (with the MPI rows and the loader-vs-step comparison)
  export BENCH_CASES=${BENCH_CASES:-"vit_s_train vit_ti_train effnet_b0_train vit_s_infer student_224 student_512"}
  export BENCH_SKIP_DATA=1
  for part in run_models run_pretrain run_data; do
    echo
    bash "bench/$part.sh" "$build" || echo "   (bench/$part.sh failed: its rows are missing above)"
  done
fi
