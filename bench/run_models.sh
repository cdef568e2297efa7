#!/usr/bin/env bash
# Model-level performance report (not a test): training / inference throughput of the real models
# (bench/perf/perf_models.c), one stage-1 DINOv2 step (bench/perf/perf_pretrain.c), each next to
# the same work in PyTorch; then the data path (perf_loader's multi-crop loading rate) and the
# synthesis rate (`versa synth`), so the report shows whether the loader outpaces the step.
#
# Usage: bash bench/run_models.sh BUILD_DIR
# Environment:
#   VERSA_THREADS / OMP_NUM_THREADS   threads for both sides (default: nproc)
#   BENCH_ROUNDS (default 2)          engine and PyTorch run alternately this many rounds (the
#                                     side that goes first alternates too); each side keeps its
#                                     best, so a burst of load from other processes does not
#                                     decide a ratio
#   BENCH_CASES                       subset, e.g. "vit_s_train pretrain" (default: all seven)
#   BENCH_PASSES, BENCH_STEPS         per run (default 2 passes of 2 steps after a warm-up step)
#   BENCH_SKIP_DATA=1                 skip the loader and synthesis measurements
#   BENCH_OUT (default BUILD_DIR/bench)  folder the summary table is written to (models_summary.txt)
set -euo pipefail
build=${1:-build}
. "$(dirname "$0")/common.sh"
cases=${BENCH_CASES:-"vit_s_train vit_ti_train effnet_b0_train vit_s_infer student_224 student_512 pretrain"}
passes=${BENCH_PASSES:-2}
steps=${BENCH_STEPS:-2}
dest=${BENCH_OUT:-$build/bench}
mkdir -p "$dest"


{
echo "== versamammo.c model performance, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "   cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores," \
     "flags: $(grep -m1 -ow -e avx512f -e avx2 -e fma /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share the cores: compare CPU time)"
echo "   threads: $threads; OPENBLAS_CORETYPE: ${preset:-(unset)} -> ${OPENBLAS_CORETYPE:-(auto)};" \
     "rounds: $rounds; $passes passes x $steps steps per run"
echo "   pytorch: $([ $have_torch = 1 ] && "$python" -c 'import torch; print(torch.__version__)' || echo '(not found)')," \
     "LD_PRELOAD=${preload:-(none)}, channels_last for the CNN"
} | tee "$dest/models_summary.txt"
echo

run_engine() {  # case round
  if [ "$1" = pretrain ]; then
    "$build/bench/perf/perf_pretrain" --passes "$passes" --steps "$steps"
  else
    "$build/bench/perf/perf_models" "$1" --passes "$passes" --steps "$steps"
  fi >"$out/engine.$1.$2.txt" 2>&1 || echo "   (engine $1 failed: see below)"
}
run_torch() {
  if [ $have_torch = 0 ]; then : >"$out/torch.$1.$2.txt"; return; fi
  if [ "$1" = pretrain ]; then
    LD_PRELOAD=$preload "$python" bench/perf/perf_pretrain_torch.py --threads "$threads" --passes "$passes" --steps "$steps"
  else
    LD_PRELOAD=$preload "$python" bench/perf/perf_models_torch.py "$1" --threads "$threads" --passes "$passes" \
      --steps "$steps"
  fi >"$out/torch.$1.$2.txt" 2>&1 || echo "   (pytorch $1 failed: see below)"
}

for r in $(seq 1 "$rounds"); do
  for cs in $cases; do
    if [ $((r % 2)) = 1 ]; then run_engine "$cs" "$r"; run_torch "$cs" "$r"
    else run_torch "$cs" "$r"; run_engine "$cs" "$r"; fi
    for side in engine torch; do
      f="$out/$side.$cs.$r.txt"
      [ -s "$f" ] || continue
      # the one-line summary of each run; the whole output when it produced no result
      if grep -q '^RESULT' "$f"; then
        printf '   round %d %-6s %-16s %s\n' "$r" "$side" "$cs" "$(grep -m1 '^   best:' "$f" | sed 's/^   best: //')"
      else
        sed 's/^/   | /' "$f"
      fi
    done
  done
done

# best over the rounds of one RESULT key: lowest for times and memory, highest for rates
get() {  # side key lower|higher
  cat "$out/$1".*.txt 2>/dev/null | awk -v k="$2" -v b="$3" '$1 == "RESULT" && $3 == k {
      v = $4 + 0; if (!n++ || (b == "lower" ? v < best : v > best)) { best = v; s = $4 } }
    END { if (n) print s }'
}
ratio() {  # engine torch lower|higher -> "1.23x" (engine relative to pytorch, >1 = engine better)
  awk -v e="${1:-}" -v t="${2:-}" -v b="$3" 'BEGIN {
    if (e == "" || t == "" || e + 0 <= 0 || t + 0 <= 0) { print "-"; exit }
    printf "%.2fx\n", b == "lower" ? t / e : e / t }'
}
label() {
  case $1 in
    vit_s_train) echo "ViT-S/16 224 train b8";;
    vit_ti_train) echo "ViT-Ti/16 224 train b16";;
    effnet_b0_train) echo "EffNet-B0 224 train b16";;
    vit_s_infer) echo "ViT-S/16 224 infer b32";;
    student_224) echo "student B0 224 b16 (st.2)";;
    student_512) echo "student B0 512 b4 (st.2)";;
    pretrain) echo "DINOv2 step ViT-Ti b16";;
  esac
}

batch() {
  case $1 in
    vit_s_train) echo 8;; vit_s_infer) echo 32;; student_512) echo 4;; *) echo 16;;
  esac
}
per_image() {  # CPU-s per step, batch -> CPU-s per image
  [ -n "${1:-}" ] && awk -v s="$1" -v b="$2" 'BEGIN { printf "%.3f\n", s / b }'
}

{
# the BLAS each side ran (first run of each side that printed one)
# (grep reads the files itself: `cat | grep -m1` would die of SIGPIPE under pipefail)
eb=$(grep -h -m1 '^== engine' "$out"/engine.*.txt 2>/dev/null | head -1 | sed 's/^== engine [^:]*: //' || true)
tb=$(grep -h -m1 '^   BLAS: ' "$out"/torch.*.txt 2>/dev/null | head -1 | sed 's/^   BLAS: //' || true)
echo
echo "== BLAS: engine ${eb:-(unknown)}"
echo "         pytorch ${tb:-(unknown)}"
echo
echo "== summary, best of $rounds round(s) per side (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "   images/s: wall clock; core = images / (CPU-s / $threads threads), the rate with the cores to ourselves."
echo "   ratio = engine relative to PyTorch (> 1: the engine is faster / uses less memory)."
printf '   %-25s %-24s | %-24s | %-22s | %-20s\n' "" "images/s, wall clock" "images/s, core" "CPU-s per image" \
       "peak RSS, MB"
printf '   %-25s %8s %8s %6s | %8s %8s %6s | %7s %7s %6s | %6s %6s %6s\n' "case" "engine" "pytorch" "ratio" \
       "engine" "pytorch" "ratio" "engine" "pytorch" "ratio" "engine" "torch" "ratio"
for cs in $cases; do
  ew=$(get engine "${cs}_images_per_s" higher); tw=$(get torch "${cs}_images_per_s" higher)
  ec=$(get engine "${cs}_images_per_s_core" higher); tc=$(get torch "${cs}_images_per_s_core" higher)
  es=$(per_image "$(get engine "${cs}_step_cpu_s" lower)" "$(batch "$cs")")
  ts=$(per_image "$(get torch "${cs}_step_cpu_s" lower)" "$(batch "$cs")")
  em=$(get engine "${cs}_peak_rss_mb" lower); tm=$(get torch "${cs}_peak_rss_mb" lower)
  printf '   %-25s %8s %8s %6s | %8s %8s %6s | %7s %7s %6s | %6s %6s %6s\n' "$(label "$cs")" \
         "${ew:--}" "${tw:--}" "$(ratio "$ew" "$tw" higher)" "${ec:--}" "${tc:--}" "$(ratio "$ec" "$tc" higher)" \
         "${es:--}" "${ts:--}" "$(ratio "$es" "$ts" lower)" "${em:--}" "${tm:--}" "$(ratio "$em" "$tm" lower)"
  echo "RESULT models $cs engine_ips=${ew:-} torch_ips=${tw:-} engine_core_ips=${ec:-} torch_core_ips=${tc:-}" \
       "engine_cpu_s_per_image=${es:-} torch_cpu_s_per_image=${ts:-} engine_rss_mb=${em:-} torch_rss_mb=${tm:-}" >>"$out/table.txt"
done
echo "   (wall-clock rates depend on the load from other processes at the moment each side ran; CPU time"
echo "    per image and the core rate are the comparable columns on a shared machine)"
} | tee -a "$dest/models_summary.txt"

if [ "${BENCH_SKIP_DATA:-0}" != 1 ]; then
  echo
  echo "== data path (the loader's workers share the same $(nproc) cores with the training step)"
  # multi-crop loading: perf_loader builds a 16-patient synthetic VinDr set and loads it
  if [ -x "$build/bench/perf/perf_loader" ]; then
    "$build/bench/perf/perf_loader" 16 512 2 12 >"$out/loader.txt" 2>&1 || true
    sed 's/^/   /' "$out/loader.txt"
  else
    echo "   ($build/bench/perf/perf_loader not built)"
  fi
  # synthesis: versa synth, 40 patients (160 images) at 416x512, VinDr layout
  if [ -x "$build/versa" ]; then
    sdir=$(mktemp -d)
    t0=$(date +%s.%N)
    if "$build/versa" synth "$sdir" --patients 40 --size 416x512 --formats vindr >"$out/synth.txt" 2>&1; then
      t1=$(date +%s.%N)
      awk -v a="$t0" -v b="$t1" 'BEGIN { printf "   versa synth: 40 patients = 160 images at 416x512 (VinDr DICOM) in %.1f s = %.1f images/s\n", b - a, 160 / (b - a) }'
    else
      echo "   versa synth failed:"; sed 's/^/   | /' "$out/synth.txt"
    fi
    rm -rf "$sdir"
  fi
  pre=$(get engine pretrain_images_per_s higher)
  mc=$(awk '/multi-crop 2x224 \+ 8x96 \+ iBOT, from 512/ && /workers 2/ {for (i = 1; i <= NF; i++) if ($(i+1) == "images/s") print $i}' "$out/loader.txt" 2>/dev/null | head -1)
  if [ -n "$pre" ] && [ -n "$mc" ]; then
    awk -v l="$mc" -v s="$pre" 'BEGIN {
      printf "   multi-crop loader %.1f images/s vs the engine'"'"'s DINOv2 step %.2f images/s: the loader is %.0fx %s\n",
             l, s, (l > s ? l / s : s / l), (l > s ? "faster (it outpaces training)" : "slower (training waits for data)") }'
  fi
fi

echo
cat "$out/table.txt" | tee -a "$dest/models_summary.txt"
echo "(summary written to $dest/models_summary.txt)"
