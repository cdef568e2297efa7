#!/usr/bin/env bash
# `make demo` — the README's first command: the two-stage VersaMammo recipe at CPU scale on
# synthetic mammograms, end to end.  Usage: demo.sh BUILD_DIR [QUICK]
#
#   synth        versa synth: four-view exams in the VinDr-Mammo, CBIS-DDSM and MammoVQA layouts
#   prepare      versa prepare: the real converters -> prepared HDF5 (VinDr; CBIS for the benchmark)
#   pretrain     stage 1: ViT teacher (DINO + iBOT + KoLeo, EMA teacher, multi-crop)
#   extract      the teacher's features of every training image, the signal of stage 2
#   distill      stage 2: EfficientNet student (supervised CE + relational KD + relation term)
#   distill-sup  the same student with every distillation weight 0: the supervised-only baseline
#   bench        versa bench --suite synthetic on frozen backbones: random init, supervised-only,
#                stage-1 teacher, stage-2 student
#   report       runs/demo*/report/: results.csv, report.md, ranks.png, training curves
#                (versa plot), the synthetic preview, summary.txt
#
# Every stage writes into runs/demo[-quick]/ and is skipped when it finished before (a stamp in
# .done/) and its output still exists: delete the output, or FORCE=1 (everything) or
# FORCE=distill,bench (those stages) to rerun.  A training stage that was interrupted resumes
# from its last checkpoint.  QUICK=1 uses tiny settings (<= 5 minutes on 2 cores); the full demo
# targets <= 45 minutes on 2 cores.  BENCH_ONLY=patterns sets the benchmark's tasks (versa bench
# --only task ids / categories; QUICK: the three VinDr-layout tasks, full: the whole synthetic
# suite, segmentation/detection/VQA included).
set -euo pipefail
build=${1:-build}
quick=${2:-}
versa="$build/versa"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
force=${FORCE:-}

if [ -n "$quick" ]; then
  out=runs/demo-quick
  patients=40; size=208x256; prep=64
  # 3 epochs x 10 iterations: the schedules (warm-up, cosine, teacher temperature) run to their end
  pre_cfg=configs/pretrain/vit_tiny_cpu_quick.yaml; pre_over=(optim.epochs=3)
  dis_cfg=configs/distill/enb0_cpu_quick.yaml; dis_over=(train.epochs=4)
  vit_px=64; enb_px=64
  # the three VinDr-layout tasks (2 classification, 1 retrieval), shorter head training
  bench_only=${BENCH_ONLY:-syn_vindr_density,syn_vindr_birads,syn_vindr_birads_retrieval}
  bench_over=(linear.val_every=50 linear.patience=5 bootstrap.n=200)
  cbis=
else
  # Measured (2026-11-22, 2 cores shared with a make asan run): synth 70 s, prepare 16 s,
  # pretrain 300 steps 590 s, extract 15 s, distill 416 steps 379 s, supervised-only 146 s,
  # bench (4 backbones, classification + retrieval + segmentation + detection) 426 s: 27.4 min
  # with the build; the VQA tasks add a few minutes.
  out=runs/demo
  patients=300; size=416x512; prep=128
  pre_cfg=configs/pretrain/vit_tiny_cpu.yaml; pre_over=(optim.epochs=6)   # 6 x 50 iterations
  dis_cfg=configs/distill/enb0_cpu_quick.yaml
  dis_over=(train.epochs=8 student.image_size=96 student.static_padding_size=96)
  vit_px=96; enb_px=96
  # the whole synthetic suite: classification, retrieval, segmentation, detection and VQA
  # (with configs/bench/synthetic.yaml's CPU-sized heads detection + segmentation cost ~90 CPU-s
  # per backbone); BENCH_ONLY=classification,retrieval for a shorter run
  bench_only=${BENCH_ONLY:-all}
  bench_over=(linear.val_every=100 linear.patience=10)
  cbis=1
fi
mkdir -p "$out/.done"
t_start=$SECONDS
declare -a summary=()
bench_failed=

forced() {  # forced NAME: FORCE=1/all, or NAME in the comma-separated FORCE list
  [ -n "$force" ] || return 1
  [ "$force" = 1 ] || [ "$force" = all ] || [[ ",$force," == *",$1,"* ]]
}

stage() {  # stage NAME OUTPUT -- command...: run unless it finished before and OUTPUT exists
  local name=$1 output=$2; shift 3
  local stamp="$out/.done/$name"
  if ! forced "$name" && [ -e "$stamp" ] && [ -e "$output" ]; then
    echo "== $name: done before ($output exists, took $(cat "$stamp") s), skipped"
    summary+=("$(printf '%-12s %6s   (earlier run: %s s)' "$name" skipped "$(cat "$stamp")")")
    return 0
  fi
  rm -f "$stamp"
  echo "== $name [$(date +%H:%M:%S), demo at $((SECONDS - t_start)) s]: $*"
  local t0=$SECONDS rc=0
  if [ "$name" = bench ]; then rm -f "$output"; fi   # no stale results if this run stops early
  "$@" || rc=$?
  if [ $rc -ne 0 ]; then
    # the benchmark writes its report even when some task runs fail: show it, rerun next time
    if [ "$name" = bench ] && [ -e "$output" ]; then
      echo "== $name: exit status $rc, some task runs failed (see $out/bench/status.csv); continuing"
      summary+=("$(printf '%-12s %5ds   some task runs FAILED: %s/bench/status.csv' "$name" $((SECONDS - t0)) "$out")")
      bench_failed=1
      return 0
    fi
    echo "== $name failed (exit status $rc) after $((SECONDS - t0)) s; fix it and rerun make demo (finished stages are kept)"
    exit $rc
  fi
  echo $((SECONDS - t0)) > "$stamp"
  summary+=("$(printf '%-12s %5ds' "$name" $((SECONDS - t0)))")
}

# --resume when a training run left a checkpoint without finishing (no stamp), unless forced
resume_flag() {  # resume_flag NAME DIR
  if ! forced "$1" && [ ! -e "$out/.done/$1" ] && [ -f "$2/checkpoint.h5" ]; then echo --resume; fi
}

echo "== versa info"
"$versa" info
echo

stage synth "$out/raw/vindr-mammo" -- \
  "$versa" synth "$out/raw" --patients "$patients" --size "$size" --formats vindr,cbis,vqa --preview "$out/synth_preview.png"
stage prepare "$out/vindr.h5" -- "$versa" prepare vindr "$out/raw/vindr-mammo" "$out/vindr.h5" --size "${prep}x${prep}"
mkdir -p "$out/bench-data"
ln -sfn ../vindr.h5 "$out/bench-data/synth-vindr.h5"   # the benchmark's VinDr-layout dataset
mkdir -p "$out/bench-data/raw"                          # and the MammoVQA-layout questions
ln -sfn ../../raw/mammovqa "$out/bench-data/raw/mammovqa"
if [ -n "$cbis" ]; then   # lesion crops are cut from 256 px images (configs/bench/synthetic.yaml)
  stage prepare-cbis "$out/bench-data/synth-cbis.h5" -- \
    "$versa" prepare cbis "$out/raw/cbis-ddsm" "$out/bench-data/synth-cbis.h5" --size 256x256
fi

stage pretrain "$out/pretrain/checkpoint.h5" -- \
  "$versa" pretrain "$pre_cfg" "data.sources=[$out/vindr.h5]" "train.output_dir=$out/pretrain" "${pre_over[@]}" \
  $(resume_flag pretrain "$out/pretrain")
stage extract "$out/teacher_features.h5" -- \
  "$versa" extract "$out/pretrain/checkpoint.h5" "$out/vindr.h5" "$out/teacher_features.h5"

img=$(find "$out/raw/vindr-mammo/images" -name '*.dicom' -print -quit)
echo "== embed: the teacher's embedding of $img"
"$versa" embed --model "$out/pretrain/checkpoint.h5" --image "$img" | sed -n 1p

dis_common=("data.prepared=$out/vindr.h5" "teacher.features=$out/teacher_features.h5" "${dis_over[@]}")
stage distill "$out/distill/checkpoint.h5" -- \
  "$versa" distill "$dis_cfg" "${dis_common[@]}" "train.output_dir=$out/distill" $(resume_flag distill "$out/distill")
stage distill-sup "$out/distill-sup/checkpoint.h5" -- \
  "$versa" distill "$dis_cfg" "${dis_common[@]}" "train.output_dir=$out/distill-sup" \
  loss.kd_weight=0 loss.contrastive_weight=0 $(resume_flag distill-sup "$out/distill-sup")

bench_args=(--suite synthetic --data-root "$out/bench-data" --out "$out/bench"
  --model "random=random:efficientnet-b0:$enb_px"
  --model "supervised=effnet-ckpt:$out/distill-sup/checkpoint.h5:$enb_px"
  --model "teacher=ckpt:$out/pretrain/checkpoint.h5:teacher:$vit_px"
  --model "student=effnet-ckpt:$out/distill/checkpoint.h5:$enb_px")
if [ -n "$bench_only" ] && [ "$bench_only" != all ]; then bench_args+=(--only "$bench_only"); fi
stage bench "$out/bench/results.csv" -- "$versa" bench "${bench_args[@]}" "${bench_over[@]}"

# ---- report folder: always rebuilt (cheap), from whatever the stages left ----
rep="$out/report"
mkdir -p "$rep"
echo "== report: $rep/"
for f in results.csv report.md ranks.png status.csv; do
  [ -f "$out/bench/$f" ] && cp "$out/bench/$f" "$rep/"
done
[ -f "$out/synth_preview.png" ] && cp "$out/synth_preview.png" "$rep/"
for run in pretrain distill distill-sup; do
  if [ -f "$out/$run/metrics.jsonl" ]; then
    "$versa" plot "$out/$run" --out "$rep/curves_$run.png" --title "$run ($out/$run/metrics.jsonl)" \
      > "$rep/curves_$run.txt"
  fi
done

# ---- summary: stage times, losses first -> last, the benchmark per backbone ----
{
  echo "demo summary: $out, $((SECONDS - t_start)) s in this run$( [ -n "$quick" ] && echo ' (QUICK: tiny settings)')"
  echo
  echo "stage        time"
  for line in "${summary[@]}"; do echo "$line"; done
  echo
  echo "training (first -> last logged step; curves in $rep/curves_*.png)"
  for run in pretrain distill distill-sup; do
    t="$rep/curves_$run.txt"
    [ -f "$t" ] || continue
    case $run in
      pretrain) keys='loss dino ibot koleo' ;;
      *) keys='loss kd con ce_birads ce_density acc_birads' ;;
    esac
    steps=$(grep -c . "$out/$run/metrics.jsonl")
    printf '  %-12s %4d steps ' "$run" "$steps"
    for k in $keys; do
      # a term whose weight is 0 logs 0 throughout: left out
      awk -v k="$k" '$1 == k && !($2 == 0 && $4 == 0) { printf " %s %.3g->%.3g", k, $2, $4 }' "$t"
    done
    echo
  done
  if [ -f "$out/bench/results.csv" ]; then
    echo
    echo "benchmark (frozen backbones, test split; each task's primary metric, 95% CI in $rep/report.md)"
    [ -n "$quick" ] && echo "  QUICK: a few dozen training steps and ~40 test images per task; these numbers check the"
    [ -n "$quick" ] && echo "  pipeline, not the recipe (their CIs are wide: see report.md)"
    # the first metric row of a (model, task) in results.csv is the task's primary metric
    awk -F, 'NR > 1 && !seen[$1 FS $2]++ {
               if (!(($2) in tk)) { tk[$2] = ++nt; tasks[nt] = $2; met[$2] = $4 }
               if (!(($1) in md)) { md[$1] = ++nm; models[nm] = $1 }
               v[$1 FS $2] = $5 }
             END {
               printf "  %-36s", "task (metric)"; for (j = 1; j <= nm; j++) printf " %10s", models[j]; printf "\n"
               for (i = 1; i <= nt; i++) {
                 printf "  %-36s", tasks[i] " (" met[tasks[i]] ")"
                 for (j = 1; j <= nm; j++) { k = models[j] FS tasks[i]; if (k in v) printf " %10.3f", v[k]; else printf " %10s", "-" }
                 printf "\n"
               } }' "$out/bench/results.csv"
    # average rank and first places, from the report's summary table
    awk -F'|' '/^\| model \| average rank/ { on = 1; next } on && /^\|---/ { next }
               on && /^\|/ { for (i = 2; i <= 4; i++) gsub(/^ +| +$/, "", $i)
                             printf "  %-12s average rank %s, first places %s\n", $2, $3, $4; next }
               on { exit }' "$out/bench/report.md"
  fi
  echo
  echo "report folder: $rep/ (report.md, results.csv, ranks.png, curves_*.png, synth_preview.png)"
} | tee "$rep/summary.txt"
# CI (DEMO_STRICT=1) wants every benchmark task to have run
if [ -n "${DEMO_STRICT:-}" ] && [ -n "$bench_failed" ]; then
  echo "demo: some benchmark task runs failed (DEMO_STRICT=1): see $out/bench/status.csv" >&2
  exit 1
fi
