#!/usr/bin/env bash
# Data-path performance report (not a test), issue 4's "Tests and measures":
#   - synthesis: images/s of `versa synth`'s work (render + write DICOM/CSV, or all formats) at
#     416x512 (bench/perf/perf_synth.c);
#   - DINO multi-crop loading at 224: the real loader (worker threads, prefetch, iBOT masks) with
#     configs/pretrain/vit_tiny_cpu.yaml's crops at 224 (2 x 224 + 4 x 96) from a prepared 512 px
#     synthetic VinDr set (bench/perf/perf_loader.c), and the config as written (2 x 96 + 4 x 48);
#   - the training step that consumes those batches: one vit_tiny DINOv2+iBOT step on the same
#     crops (bench/perf/perf_pretrain.c), and the comparison the issue asks for.
#
# Usage: bash bench/run_data.sh BUILD_DIR        (builds nothing: `make BUILD=... bench` first, or
#        make BUILD_DIR/bench/perf/perf_{synth,loader,pretrain})
# Environment:
#   VERSA_THREADS / OMP_NUM_THREADS   threads of the step and of the generator, and the loader's
#                                     worker count (default: nproc)
#   BENCH_ROUNDS (default 2)          every measurement this many times; the summary keeps the best
#   DATA_PATIENTS (default 16)        synthetic patients (4 images each) for loader and synthesis
#   BENCH_OUT (default BUILD_DIR/bench)  folder the summary is written to (data_summary.txt)
# Rates are printed two ways: wall (what this run saw; other processes share the cores) and
# "core" = images / (CPU-seconds / threads), the rate with the threads' cores to itself.
set -euo pipefail
build=${1:-build}
. "$(dirname "$0")/common.sh"
patients=${DATA_PATIENTS:-16}
dest=${BENCH_OUT:-$build/bench}
perf=$build/bench/perf
for p in perf_synth perf_loader perf_pretrain; do
  if [ ! -x "$perf/$p" ]; then
    echo "run_data.sh: $perf/$p is not built (make BUILD=$build $perf/$p)" >&2
    exit 1
  fi
done
mkdir -p "$dest"

{
echo "== versamammo.c data-path report, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "   cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share the cores: compare core rates)"
echo "   threads / loader workers: $threads; rounds: $rounds; OPENBLAS_CORETYPE: ${preset:-(unset)} -> ${OPENBLAS_CORETYPE:-(auto)}"
echo "   command: bash bench/run_data.sh $build"
} | tee "$out/head.txt"

for r in $(seq 1 "$rounds"); do
  echo
  echo "== round $r"
  # a failing program leaves its rows empty ("-") instead of stopping the report
  "$perf/perf_synth" --patients $(( (patients + 1) / 2 )) --size 416x512 --passes 1 | tee "$out/synth.$r.txt" ||
    echo "   (perf_synth failed)"
  "$perf/perf_loader" "$patients" 256 "$threads" 12 | tee "$out/loader.$r.txt" || echo "   (perf_loader failed)"
  # the step at 224: vit_tiny, 2 x 224 + 4 x 96 (the loader_mc224 crops), batch 16
  "$perf/perf_pretrain" --batch 16 --local 4 --passes 1 --steps 1 | tee "$out/step224.$r.txt" ||
    echo "   (perf_pretrain at 224 failed)"
  # the step of vit_tiny_cpu.yaml as written: 2 x 96 + 4 x 48, batch 32
  "$perf/perf_pretrain" --batch 32 --local 4 --passes 1 --steps 2 \
    --set crops.global_crops_size=96 --set crops.local_crops_size=48 | tee "$out/step96.$r.txt" ||
    echo "   (perf_pretrain at vit_tiny_cpu.yaml's crops failed)"
done

# best over the rounds of one RESULT key (file prefix, key, lower|higher)
get() {
  cat "$out/$1".*.txt 2>/dev/null | awk -v k="$2" -v b="$3" '$1 == "RESULT" && $3 == k {
      v = $4 + 0; if (!n++ || (b == "lower" ? v < best : v > best)) { best = v; s = $4 } }
    END { if (n) print s }'
}
row() {  # label value unit
  printf '   %-58s %10s %s\n' "$1" "${2:--}" "$3"
}
div() { awk -v a="${1:-}" -v b="${2:-}" -v f="$3" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf f, a / b; else print "-" }'; }

s224=$(get step224 pretrain_images_per_s higher); s224c=$(get step224 pretrain_images_per_s_core higher)
s224cpu=$(get step224 pretrain_step_cpu_s lower)
s96=$(get step96 pretrain_images_per_s higher); s96c=$(get step96 pretrain_images_per_s_core higher)
s96cpu=$(get step96 pretrain_step_cpu_s lower)
s224ms=$(div "$s224cpu" 0.016 "%.1f"); s96ms=$(div "$s96cpu" 0.032 "%.1f")   # CPU ms per image (batch 16 / 32)
l224=$(get loader loader_mc224_images_per_s higher); l224c=$(get loader loader_mc224_images_per_s_core higher)
l224ms=$(get loader loader_mc224_cpu_ms_per_image lower); l224_1w=$(get loader loader_mc224_1w_images_per_s higher)
l96=$(get loader loader_mc_config_images_per_s higher); l96c=$(get loader loader_mc_config_images_per_s_core higher)
l96ms=$(get loader loader_mc_config_cpu_ms_per_image lower)
crops224=$(awk '$1 == "RESULT" && $3 == "loader_mc224_crops" {print $4; exit}' "$out"/loader.*.txt 2>/dev/null || true)
crops96=$(awk '$1 == "RESULT" && $3 == "loader_mc_config_crops" {print $4; exit}' "$out"/loader.*.txt 2>/dev/null || true)
size=$(awk '$1 == "RESULT" && $3 == "synth_size" {print $4; exit}' "$out"/synth.*.txt 2>/dev/null || true)
crops224=${crops224:-2x224+4x96}; crops96=${crops96:-2x96+4x48}; size=${size:-416x512}   # if a program failed

{
cat "$out/head.txt"
echo
echo "== data-path summary, best of $rounds round(s) (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
row "synthesis $size, VinDr DICOM + CSVs, wall" "$(get synth synth_vindr_images_per_s higher)" "images/s ($threads threads)"
row "synthesis $size, VinDr DICOM + CSVs, core" "$(get synth synth_vindr_images_per_s_core higher)" "images/s ($threads threads)"
row "synthesis $size, VinDr DICOM + CSVs, CPU per image" "$(get synth synth_vindr_cpu_ms_per_image lower)" "ms"
row "synthesis $size, all formats (versa synth default), core" "$(get synth synth_all_images_per_s_core higher)" "images/s ($threads threads)"
row "multi-crop loader $crops224 + iBOT, wall" "$l224" "images/s ($threads workers)"
row "multi-crop loader $crops224 + iBOT, core" "$l224c" "images/s ($threads workers)"
row "multi-crop loader $crops224 + iBOT, 1 worker, wall" "$l224_1w" "images/s"
row "multi-crop loader $crops224 + iBOT, CPU per image" "$l224ms" "ms"
row "vit_tiny DINOv2+iBOT step $crops224 (batch 16), wall" "$s224" "images/s ($threads threads)"
row "vit_tiny DINOv2+iBOT step $crops224 (batch 16), core" "$s224c" "images/s ($threads threads)"
row "vit_tiny DINOv2+iBOT step $crops224, CPU per image" "$s224ms" "ms"
row "loader / step at 224, core rates" "$(div "$l224c" "$s224c" "%.1fx")" "(> 1: the loader outpaces the step)"
row "loader / step at 224, wall rates" "$(div "$l224" "$s224" "%.1fx")" "(same load, measured one after the other)"
row "CPU share of loading per trained image at 224" "$(awk -v l="$l224ms" -v s="$s224ms" 'BEGIN { if (l != "" && s != "-" && s != "") printf "%.1f", 100 * l / (l + s); else print "-" }')" "% (loader and step on the same cores)"
row "multi-crop loader $crops96 (vit_tiny_cpu.yaml), core" "$l96c" "images/s ($threads workers)"
row "multi-crop loader $crops96, CPU per image" "$l96ms" "ms"
row "vit_tiny step $crops96 (vit_tiny_cpu.yaml, batch 32), core" "$s96c" "images/s ($threads threads)"
row "vit_tiny step $crops96, CPU per image" "$s96ms" "ms"
row "loader / step at vit_tiny_cpu.yaml's crops, core rates" "$(div "$l96c" "$s96c" "%.1fx")" ""
row "CPU share of loading per trained image (vit_tiny_cpu.yaml)" "$(awk -v l="$l96ms" -v s="$s96ms" 'BEGIN { if (l != "" && s != "-" && s != "") printf "%.1f", 100 * l / (l + s); else print "-" }')" "%"
echo "   (core = images / (CPU-seconds / threads): the rate with the cores to itself; wall depends on the"
echo "    load from other processes.  In training the loader's workers and the step share the same cores,"
echo "    so the CPU share is what loading costs the step.)"
echo "RESULT data summary synth_vindr_core_ips=$(get synth synth_vindr_images_per_s_core higher)" \
     "loader_mc224_core_ips=${l224c:-} step224_core_ips=${s224c:-} loader_mc_config_core_ips=${l96c:-}" \
     "step_config_core_ips=${s96c:-}"
} | tee "$out/summary.txt"
cp "$out/summary.txt" "$dest/data_summary.txt"
echo "(summary written to $dest/data_summary.txt)"
