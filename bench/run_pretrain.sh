#!/usr/bin/env bash
# Stage-1 pretraining performance (not a test): one DINOv2 step (bench/perf/perf_pretrain.c:
# ViT-Ti/16, 2 x 224 + 4 x 96 crops, K = 4096 DINO and iBOT heads, DINO + iBOT + KoLeo, clip,
# AdamW, EMA teacher) next to the same step in PyTorch (bench/perf/perf_pretrain_torch.py), then
# the MPI data-parallel step on this machine: 2 ranks x 1 thread against 1 rank x 2 threads, same
# global batch.  One image = all its crops.
#
# Usage: bash bench/run_pretrain.sh BUILD_DIR
# Environment:
#   VERSA_THREADS / OMP_NUM_THREADS   threads for the engine-vs-PyTorch rows (default: nproc)
#   BENCH_ROUNDS (default 2)          engine and PyTorch alternate this many rounds (the side that
#                                     goes first alternates too); each side keeps its best
#   BENCH_PASSES, BENCH_STEPS         per run (default 2 passes of 2 steps after a warm-up step)
#   BENCH_BATCH (default 16)          global batch (even, for the 2-rank row)
#   BENCH_SKIP_MPI=1                  skip the MPI rows
set -euo pipefail
build=${1:-build}
. "$(dirname "$0")/common.sh"
passes=${BENCH_PASSES:-2}
steps=${BENCH_STEPS:-2}
batch=${BENCH_BATCH:-16}
perf="$build/bench/perf/perf_pretrain"
[ -x "$perf" ] || { echo "run_pretrain: $perf not found (make BUILD=$build $perf)"; exit 1; }


echo "== versamammo.c stage-1 pretraining performance, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "   cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share the cores: compare CPU time)"
echo "   threads: $threads; OPENBLAS_CORETYPE: ${preset:-(unset)} -> ${OPENBLAS_CORETYPE:-(auto)};" \
     "rounds: $rounds; $passes passes x $steps steps per run; batch $batch"
echo "   pytorch: $([ $have_torch = 1 ] && "$python" -c 'import torch; print(torch.__version__)' || echo '(not found)')," \
     "LD_PRELOAD=${preload:-(none)}"
echo

args=(--batch "$batch" --passes "$passes" --steps "$steps")
run_engine() { "$perf" "${args[@]}" >"$out/engine.$1.txt" 2>&1 || echo "   (engine failed: $(tail -1 "$out/engine.$1.txt"))"; }
run_torch() {
  if [ $have_torch = 0 ]; then : >"$out/torch.$1.txt"; return; fi
  LD_PRELOAD=$preload "$python" bench/perf/perf_pretrain_torch.py --threads "$threads" "${args[@]}" \
    >"$out/torch.$1.txt" 2>&1 || echo "   (pytorch failed: $(tail -1 "$out/torch.$1.txt"))"
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then run_engine "$r"; run_torch "$r"; else run_torch "$r"; run_engine "$r"; fi
  [ "$r" = 1 ] && { sed -n '1,2p' "$out/engine.1.txt"; sed -n '1,2p' "$out/torch.1.txt"; }
  for side in engine torch; do
    f="$out/$side.$r.txt"
    [ -s "$f" ] && grep -q '^RESULT' "$f" && printf '   round %d %-6s %s\n' "$r" "$side" "$(grep -m1 '^   losses:' "$f" | sed 's/^ *//')"
  done
done

# MPI: the same global batch on 2 ranks x 1 thread, and on 1 rank x 2 threads (both engine)
mpi_ok=0
if [ "${BENCH_SKIP_MPI:-0}" != 1 ] && command -v mpirun >/dev/null; then
  for r in $(seq 1 "$rounds"); do
    VERSA_THREADS=1 OMP_NUM_THREADS=1 "$perf" "${args[@]}" >"$out/single.$r.txt" 2>&1 || true
    VERSA_THREADS=2 OMP_NUM_THREADS=2 "$perf" "${args[@]}" >"$out/one.$r.txt" 2>&1 || true
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
      mpirun -np 2 --oversubscribe --bind-to none -x VERSA_THREADS=1 -x OMP_NUM_THREADS=1 -x OMP_WAIT_POLICY=PASSIVE \
      "$perf" "${args[@]}" >"$out/mpi.$r.txt" 2>&1 || echo "   (mpirun failed: $(tail -1 "$out/mpi.$r.txt"))"
  done
  grep -q '^RESULT' "$out"/mpi.*.txt 2>/dev/null && mpi_ok=1
fi

# best over the rounds of one RESULT key: lowest for times and memory, highest for rates
get() {  # file-glob-prefix key lower|higher
  cat "$out/$1".*.txt 2>/dev/null | awk -v k="$2" -v b="$3" '$1 == "RESULT" && $3 == k {
      v = $4 + 0; if (!n++ || (b == "lower" ? v < best : v > best)) { best = v; s = $4 } }
    END { if (n) print s }'
}
row() {  # label engine torch lower|higher
  awk -v l="$1" -v e="${2:-}" -v t="${3:-}" -v b="$4" 'BEGIN {
    r = (e != "" && t != "" && e + 0 > 0 && t + 0 > 0) ? (b == "lower" ? t / e : e / t) : 0
    printf "   %-34s %10s %10s %9s\n", l, (e == "" ? "-" : e), (t == "" ? "-" : t), (r ? sprintf("%.2fx", r) : "-") }'
}
per_image() { [ -n "${1:-}" ] && awk -v s="$1" -v b="$batch" 'BEGIN { printf "%.3f\n", s / b }'; }

{
echo
echo "== stage-1 step, ViT-Ti/16 2x224 + 4x96 crops, K 4096, batch $batch: best of $rounds round(s) per side" \
     "(load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '   %-34s %10s %10s %9s\n' "" "engine" "pytorch" "engine is"
row "step, wall (s)" "$(get engine pretrain_step_s lower)" "$(get torch pretrain_step_s lower)" lower
row "step, CPU time (CPU-s)" "$(get engine pretrain_step_cpu_s lower)" "$(get torch pretrain_step_cpu_s lower)" lower
row "CPU-s per image" "$(per_image "$(get engine pretrain_step_cpu_s lower)")" \
    "$(per_image "$(get torch pretrain_step_cpu_s lower)")" lower
row "images/s, wall" "$(get engine pretrain_images_per_s higher)" "$(get torch pretrain_images_per_s higher)" higher
row "images/s, core ($threads threads)" "$(get engine pretrain_images_per_s_core higher)" \
    "$(get torch pretrain_images_per_s_core higher)" higher
row "peak RSS (MB)" "$(get engine pretrain_peak_rss_mb lower)" "$(get torch pretrain_peak_rss_mb lower)" lower
echo "   (core = images / (CPU-s / threads): the rate with the cores to ourselves; 'engine is' > 1: faster / smaller)"
if [ $mpi_ok = 1 ]; then
  echo
  echo "== MPI data parallel on this machine, global batch $batch (engine only)"
  printf '   %-30s %14s %14s %14s\n' "" "1 rank x 1 thr" "1 rank x 2 thr" "2 ranks x 1 thr"
  mrow() {  # label key-suffix lower|higher divisor printf-format
    local a b c
    a=$(get single "pretrain_$2" "$3"); b=$(get one "pretrain_$2" "$3"); c=$(get mpi "pretrain_mpi_$2" "$3")
    awk -v l="$1" -v a="$a" -v b="$b" -v c="$c" -v n="$4" -v f="$5" 'BEGIN {
      printf "   %-30s " f " " f " " f "\n", l, a / n, b / n, c / n }'
  }
  mrow "images/s, wall" images_per_s higher 1 "%14.2f"
  mrow "images/s, core" images_per_s_core higher 1 "%14.2f"
  mrow "CPU-s per image (all ranks)" step_cpu_s lower "$batch" "%14.3f"
  mrow "peak RSS per rank (MB)" peak_rss_mb lower 1 "%14.0f"
  # efficiency = rate on 2 cores / (2 x rate on 1 core), from CPU time (core rates), so that the
  # load from other processes cancels; 100 % = the second core adds a whole core's work
  awk -v s="$(get single pretrain_images_per_s_core higher)" -v o="$(get one pretrain_images_per_s_core higher)" \
      -v m="$(get mpi pretrain_mpi_images_per_s_core higher)" 'BEGIN {
    if (s > 0 && o > 0 && m > 0)
      printf "   scaling efficiency on 2 cores: 2 ranks x 1 thread %.0f%%, 1 rank x 2 threads %.0f%%" \
             " (of 2 x the 1-thread rate); 2 ranks / 2 threads = %.2fx\n", 100 * m / (2 * s), 100 * o / (2 * s), m / o }'
  echo "   (core rate = images / (CPU-s / cores used); 2 ranks hold 2 replicas of the model and optimizer)"
fi
} | tee "$out/summary.txt"
