#!/usr/bin/env bash
# `make demo` — the README's first command: the two-stage VersaMammo recipe at CPU scale on
# synthetic mammograms, end to end.  Usage: demo.sh BUILD_DIR [QUICK]
#
#   versa synth     synthetic four-view exams in the VinDr-Mammo and CBIS-DDSM layouts
#   versa prepare   the real converters -> prepared HDF5
#   versa pretrain  stage 1: ViT teacher (DINO + iBOT + KoLeo, EMA teacher, multi-crop)
#   versa extract   teacher features for stage 2
#   versa distill   stage 2: EfficientNet student (supervised + relational KD)
#   versa bench     frozen-backbone benchmark: random init, supervised-only, teacher, student
#
# Every stage writes into runs/demo[-quick]/ and is skipped when its output already exists, so a
# stage can be rerun alone by deleting its output (or FORCE=1 reruns everything).  QUICK=1 uses
# tiny settings (a few minutes); the full demo targets <= 45 minutes on 2 cores.
set -euo pipefail
build=${1:-build}
quick=${2:-}
versa="$build/versa"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
force=${FORCE:-}

if [ -n "$quick" ]; then
  out=runs/demo-quick
  patients=40; size=208x256; prep=64
  pre_cfg=configs/pretrain/vit_tiny_cpu_quick.yaml; pre_over=(train.max_iterations=30)
  dis_cfg=configs/distill/enb0_cpu_quick.yaml
else
  out=runs/demo
  patients=500; size=416x512; prep=128
  pre_cfg=configs/pretrain/vit_tiny_cpu.yaml; pre_over=(train.max_iterations=300)
  dis_cfg=configs/distill/enb0_cpu_quick.yaml
fi
mkdir -p "$out"
t_start=$SECONDS
declare -a summary=()

stage() {  # stage NAME OUTPUT -- command...: run unless OUTPUT exists
  local name=$1 output=$2; shift 3
  if [ -z "$force" ] && [ -e "$output" ]; then
    echo "== $name: $output exists, skipped (delete it or FORCE=1 to rerun)"
    summary+=("$(printf '%-9s skipped (output exists)' "$name")")
    return 0
  fi
  echo "== $name: $*"
  local t0=$SECONDS
  "$@"
  summary+=("$(printf '%-9s %4ds' "$name" $((SECONDS - t0)))")
}

implemented() { "$versa" "$1" --help 2>/dev/null | grep -qv 'Not implemented yet'; }

echo "== versa info"
"$versa" info
echo

stage synth "$out/raw/vindr-mammo" -- \
  "$versa" synth "$out/raw" --patients "$patients" --size "$size" --formats vindr,cbis,vqa --preview "$out/synth_preview.png"
stage prepare "$out/vindr.h5" -- "$versa" prepare vindr "$out/raw/vindr-mammo" "$out/vindr.h5" --size "${prep}x${prep}"
stage pretrain "$out/pretrain/checkpoint.h5" -- \
  "$versa" pretrain "$pre_cfg" "data.sources=[$out/vindr.h5]" "train.output_dir=$out/pretrain" "${pre_over[@]}"
stage extract "$out/teacher_features.h5" -- \
  "$versa" extract "$out/pretrain/checkpoint.h5" "$out/vindr.h5" "$out/teacher_features.h5"

img=$(find "$out/raw/vindr-mammo/images" -name '*.dicom' -print -quit)
echo "== embed: the teacher's embedding of $img"
"$versa" embed --model "$out/pretrain/checkpoint.h5" --image "$img" | sed -n 1p

if implemented distill && [ -f "$dis_cfg" ]; then
  stage distill "$out/distill/checkpoint.h5" -- \
    "$versa" distill "$dis_cfg" "data.prepared=$out/vindr.h5" "teacher.features=$out/teacher_features.h5" \
    "train.output_dir=$out/distill"
else
  echo "== distill: not available in this build yet (issue 6)"
fi

if implemented bench; then
  echo "== bench: see 'versa bench --help' (the demo's synthetic suite joins here with issue 9)"
fi

echo
echo "== demo summary ($((SECONDS - t_start)) s in all; outputs in $out/)"
for line in "${summary[@]}"; do echo "   $line"; done
if [ -f "$out/pretrain/metrics.jsonl" ]; then
  first=$(head -1 "$out/pretrain/metrics.jsonl" | grep -o '"loss":[^,]*' | cut -d: -f2)
  last=$(tail -1 "$out/pretrain/metrics.jsonl" | grep -o '"loss":[^,]*' | cut -d: -f2)
  echo "   stage-1 loss: $first -> $last ($(wc -l < "$out/pretrain/metrics.jsonl") steps; metrics in $out/pretrain/metrics.jsonl)"
fi
echo "   synthetic preview: $out/synth_preview.png"
