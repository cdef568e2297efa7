#!/usr/bin/env bash
# bench/pretrain_evidence.sh — stage 1 evidence (issue 5): does the CPU-sized DINOv2 teacher learn
# features that a frozen-feature probe can use, compared with the same ViT randomly initialised?
#
#   data:     versa bench --make-synthetic: PATIENTS synthetic patients (4 images each) in the
#             VinDr-Mammo and CBIS-DDSM layouts, prepared with the real converters (VinDr 128 px,
#             CBIS 256 px); the patient-level train/val/test split of the converters
#   stage 1:  versa pretrain configs/pretrain/vit_tiny_cpu.yaml on the train split of the VinDr
#             file (ViT-Ti/16, 96 px global crops, K = 256, batch 16), ITERS iterations (<= 15 min on 2
#             cores); the CBIS images (another layout and size) are never seen in pretraining
#   probes:   versa bench --suite synthetic on frozen features (GAP of the final-norm patch tokens,
#             and the CLS token), for the teacher, its own initialisation (a 1-step run at LR 0)
#             and `random:vit_tiny` (architecture default LayerScale 1e-5), at the pretraining
#             resolution and normalisation: linear probe (AdamW, model selection on val) and k-NN
#             (k = 20) for density A-D (VinDr and CBIS layouts) and malignancy (CBIS pathology,
#             whole images and lesion crops, each crop labelled by its own lesion's pathology),
#             test-split metrics with bootstrap CIs.
#   ceilings: bench/probe_ceiling.py (PyTorch; CEILING=0 skips): a CNN trained with the labels and
#             an intensity-histogram regression on the same splits — the room a probe has.
#   lesions:  (LESION=1) the same at lesion resolution: PATIENTS patients in the CBIS layout at
#             1024x1280 (0.19 mm pixels) and lesion contrast 3, prepared at 1024 px; a second teacher
#             pretrained (same config, ITERS) on the train split's lesion crops only, the release's
#             cropped images (`versa prepare cbis-roi`, no labels used); probed on the 1024-px file's
#             crops for pathology and for mass vs calcification (syn_cbis_finding).  ~35 more
#             minutes on 2 cores (data 15, pretraining 10-13, probes 5); 12 GB of DICOM + 3 GB.
#
# Usage: bash bench/pretrain_evidence.sh [BUILD_DIR] [OUT_DIR]
# Knobs (environment): PATIENTS (1200), ITERS (1000 = optim.epochs 20 x 50: 606 s on 2 AVX-512
#   cores with OpenBLAS's SkylakeX kernels, which bench/blas_core.sh selects), THREADS (2),
#   CONFIG (configs/pretrain/vit_tiny_cpu.yaml), EXTRA (key=value overrides of the pretrain config;
#   default: peak LR 5e-4 and brightness / contrast jitter 0.6 instead of 0.4, as wide as the data's
#   display spread; EXTRA= runs the config as committed), SIZE (96: probe input
#   side), ACQ (8: versa synth --acquisition, the spread of the display processing between images;
#   1 is the generator's default, where brightness encodes density and a random network's features
#   are already within 0.02-0.04 AUC of a supervised one's, docs/evidence-stage1.md), LESION (0).
# Reruns reuse what exists in OUT_DIR (data, teacher checkpoint, feature caches); delete the
# folder (or OUT_DIR/teacher) to start over.  Not run by the tests.  Writes OUT_DIR/results.md.
set -euo pipefail
build=${1:-build}
out=${2:-runs/pretrain_evidence}
PATIENTS=${PATIENTS:-1200}
ITERS=${ITERS:-1000}
THREADS=${THREADS:-2}
CONFIG=${CONFIG:-configs/pretrain/vit_tiny_cpu.yaml}
EXTRA=${EXTRA-optim.base_lr=0.004 crops.brightness=0.6 crops.contrast=0.6}
SIZE=${SIZE:-96}
ACQ=${ACQ:-8}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} VERSA_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
# shellcheck source=bench/blas_core.sh
. "$(dirname "$0")/blas_core.sh"
versa="$build/versa"
[ -x "$versa" ] || { echo "pretrain_evidence: $versa not found (make BUILD=$build)"; exit 1; }
mkdir -p "$out"
t_start=$(date +%s)
log() { echo "== $* ($(( $(date +%s) - t_start )) s)"; }
cpu_of() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat" 2>/dev/null; }

# ---- data ----
if [ ! -f "$out/data/synth-cbis.h5" ]; then
  log "synthetic data: $PATIENTS patients, display spread $ACQ"
  "$versa" bench --make-synthetic "$out/data" --patients "$PATIENTS" --size 256x320 --acquisition "$ACQ"
fi

# ---- stage 1 ----
epoch_len=50
epochs=$(( (ITERS + epoch_len - 1) / epoch_len ))
# pretrain SOURCE.h5 DIR: the teacher in DIR/teacher (timed into DIR/pretrain_time.txt) and its own
# initialisation in DIR/init (same seed, same LayerScale init): one step at LR 0 (the warm-up
# starts at 0, so neither the student nor the EMA teacher moves).  `random:vit_tiny` keeps the
# architecture default LayerScale 1e-5, a different network at step 0 when the config sets 1.0.
pretrain() {
  local src=$1 dir=$2
  # shellcheck disable=SC2206
  local common=("$CONFIG" "data.sources=[$src]" "train.OFFICIAL_EPOCH_LENGTH=$epoch_len" "optim.epochs=$epochs" $EXTRA)
  if [ ! -f "$dir/teacher/checkpoint.h5" ]; then
    log "stage 1 on $src: $CONFIG, $ITERS iterations, $THREADS threads"
    /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KB peak RSS" -o "$dir/pretrain_time.txt" \
      "$versa" pretrain "${common[@]}" "train.output_dir=$dir/teacher" "train.max_iterations=$ITERS" \
        train.log_every=25 "train.checkpoint_every=$ITERS"
  fi
  cat "$dir/pretrain_time.txt" 2>/dev/null || true
  if [ ! -f "$dir/init/checkpoint.h5" ]; then
    "$versa" pretrain "${common[@]}" "train.output_dir=$dir/init" train.max_iterations=1 train.log_every=1 \
      train.checkpoint_every=1 >"$dir/init.log" 2>&1
  fi
}
pretrain "$out/data/synth-vindr.h5" "$out"

# probe DIR DATA_ROOT TASKS [--tasks FILE]: teacher, init, random and the CLS variants of DIR's
# checkpoints on the --only TASKS, into DIR/bench.  Pretraining normalises with the ImageNet
# mean/std (data/augment.c): probe with the same (their averages over the 3 channels), so the
# teacher sees the input statistics it was trained on.
probe() {
  local dir=$1 root=$2 only=$3; shift 3
  "$versa" bench --suite synthetic "$@" --data-root "$root" --out "$dir/bench" --only "$only" \
    --model "teacher=ckpt:$dir/teacher/checkpoint.h5:teacher:$SIZE" \
    --model "init=ckpt:$dir/init/checkpoint.h5:teacher:$SIZE" \
    --model "random=random:vit_tiny:16:$SIZE" \
    --model "teacher_cls=ckpt:$dir/teacher/checkpoint.h5:teacher:$SIZE:feature=cls" \
    --model "init_cls=ckpt:$dir/init/checkpoint.h5:teacher:$SIZE:feature=cls" \
    --baseline init input.mean=0.449 input.std=0.226 --quiet
}

# ---- probes ----
# The probe tasks: density and malignancy of configs/bench/synthetic.yaml, plus whole-image
# malignancy of the CBIS layout (the suite probes CBIS pathology on lesion crops only).
cat >"$out/tasks.yaml" <<'EOF'
tasks:
  syn_cbis_malignancy:
    title: "Synthetic CBIS malignancy (whole image)"
    dataset: synth-cbis
    category: classification
    protocol: [linear, knn]
    label: pathology
    classes: [Benign, Malignant]
    source: [benign, malignant]
    metric: auc
EOF
log "probes: teacher vs random init ($SIZE px; GAP and CLS features)"
probe "$out" "$out/data" syn_vindr_density,syn_cbis_density,syn_cbis_malignancy,syn_cbis_pathology --tasks "$out/tasks.yaml"

# ---- lesions (LESION=1) ----
les=$out/lesion
if [ "${LESION:-0}" = 1 ]; then
  mkdir -p "$les/data"
  if [ ! -f "$les/roi.h5" ]; then
    log "lesion data: $PATIENTS patients, CBIS layout at 1024x1280, lesion contrast 3, display spread $ACQ"
    "$versa" synth "$les/raw" --patients "$PATIENTS" --size 1024x1280 --formats cbis --acquisition "$ACQ" \
      --contrast 3 --seed 0
    "$versa" prepare cbis "$les/raw/cbis-ddsm" "$les/data/synth-cbis.h5" --size 1024x1024
    "$versa" prepare cbis-roi "$les/raw/cbis-ddsm" "$les/roi.h5" --size "${SIZE}x$SIZE"
  fi
  pretrain "$les/roi.h5" "$les"
  log "lesion probes: pathology and mass vs calcification on the 1024-px crops"
  probe "$les" "$les/data" syn_cbis_pathology,syn_cbis_finding
fi

# The ceilings (PyTorch, optional; CEILING=0 skips): a small CNN trained *with the labels* on the
# same splits, and a logistic regression on intensity histograms — how much room each probe has
# above random features (bench/probe_ceiling.py).
if [ "${CEILING:-1}" = 1 ] && /usr/bin/python3 -c 'import torch, h5py, sklearn' 2>/dev/null; then
  if [ ! -s "$out/ceiling.txt" ]; then
    log "ceilings: supervised CNN and intensity histogram (density; pathology of lesion crops)"
    { OMP_NUM_THREADS=$THREADS /usr/bin/python3 bench/probe_ceiling.py "$out/data/synth-vindr.h5" --threads "$THREADS"
      OMP_NUM_THREADS=$THREADS /usr/bin/python3 bench/probe_ceiling.py "$out/data/synth-cbis.h5" --threads "$THREADS" \
        --label pathology --unit crop; } >"$out/ceiling.txt.tmp" && mv "$out/ceiling.txt.tmp" "$out/ceiling.txt"
  fi
fi

# ---- table ----
# table BENCH_DIR: one row per task, protocol, metric and feature (GAP, CLS) of a probe run
table() {
  echo "| task | protocol | metric | feature | random (LS 1e-5) | init (teacher's step 0) | teacher | teacher - init |"
  echo "|---|---|---|---|---|---|---|---|"
  awk -F, 'FNR == NR { if (FNR > 1 && $1 == "teacher") pd[$2 "," $3] = sprintf("%+.3f [%+.3f, %+.3f] p %.3f", $5, $6, $7, $8); next }
    FNR > 1 && ($4 ~ /auc$/ || $4 ~ /bacc$/) {
      key = $2 "," $4; v[$1 "," key] = $5; lo[$1 "," key] = $6; hi[$1 "," key] = $7
      if (!(key in seen)) { seen[key] = 1; order[n++] = key } }
    function cell(m, k) { return (m "," k) in v ? sprintf("%.3f [%.3f, %.3f]", v[m "," k], lo[m "," k], hi[m "," k]) : "" }
    END {
      for (f = 0; f < 2; f++)
      for (i = 0; i < n; i++) {
        # metric names: auc, bacc (linear probe), knn_auc, knn_bacc (k-NN)
        split(order[i], k, ","); m = k[2]; p = "linear"; mm = m
        if (index(m, "_")) { p = m; sub(/_.*/, "", p); sub(/^[^_]*_/, "", mm) }
        sfx = f ? "_cls" : ""; t = "teacher" sfx "," order[i]; z = "init" sfx "," order[i]
        if (!(t in v) || !(z in v)) continue
        d = (!f && (order[i] in pd)) ? pd[order[i]] : sprintf("%+.3f", v[t] - v[z])
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", k[1], p, mm, f ? "CLS" : "GAP",
               f ? "" : cell("random", order[i]), cell("init" sfx, order[i]), cell("teacher" sfx, order[i]), d
      } }' "$1/paired.csv" "$1/results.csv"
}
{
  echo "# Stage 1 evidence: frozen-feature probes, pretrained teacher vs random init"
  echo
  echo "Command: \`bash bench/pretrain_evidence.sh $build $out\` (PATIENTS=$PATIENTS ITERS=$ITERS THREADS=$THREADS"
  echo "CONFIG=$CONFIG EXTRA='$EXTRA' SIZE=$SIZE ACQ=$ACQ)"
  echo
  echo "BLAS: $("$versa" info | sed -n 's/^BLAS *//p') (OPENBLAS_CORETYPE ${preset:-unset} -> ${OPENBLAS_CORETYPE:-auto})"
  echo
  echo "Pretraining: $(cat "$out/pretrain_time.txt" 2>/dev/null || echo '(reused checkpoint)');"
  echo "first/last logged loss: $(head -1 "$out/teacher/metrics.jsonl" | grep -o '"loss": *[-0-9.e]*' | head -1) ->" \
       "$(tail -1 "$out/teacher/metrics.jsonl" | grep -o '"loss": *[-0-9.e]*' | head -1)"
  echo
  echo "Test split: AUC (one-vs-rest macro for density) and balanced accuracy (bacc), 95% bootstrap CI in brackets."
  echo
  echo "Models: random = \`random:vit_tiny\` (architecture default LayerScale 1e-5); init = the teacher's own"
  echo "initialisation (a 1-step run at LR 0: same seed, same LayerScale); teacher = after pretraining."
  echo "Features: GAP of the final-norm patch tokens (the paper's), and the final-norm CLS token (what DINO trains)."
  echo
  echo "teacher - init: the difference on the test set; for GAP features with its paired bootstrap 95% CI"
  echo "(the same resamples for both models, versa bench --baseline init) and P(difference <= 0)."
  echo
  table "$out/bench"
  if [ -f "$out/ceiling.txt" ]; then
    echo
    echo "Ceilings (bench/probe_ceiling.py: a 4-block CNN trained with the labels on the same train split,"
    echo "model selection on val; and a logistic regression on intensity-histogram features):"
    echo
    sed 's/^/    /' "$out/ceiling.txt"
  fi
  if [ -f "$les/bench/paired.csv" ]; then
    echo
    echo "## Lesions (LESION=1): a teacher pretrained on the train split's lesion crops"
    echo
    echo "Data: the CBIS layout at 1024x1280, lesion contrast 3 (\`versa synth ... --contrast 3 --seed 0\`),"
    echo "prepared at 1024 px; pretraining on \`versa prepare cbis-roi\` crops at $SIZE px (train split, no labels)."
    echo "Pretraining: $(cat "$les/pretrain_time.txt" 2>/dev/null || echo '(reused checkpoint)')."
    echo "syn_cbis_finding: mass vs calcification on the same crops as syn_cbis_pathology."
    echo
    table "$les/bench"
  fi
} >"$out/results.md"
cat "$out/results.md"
log "done; table in $out/results.md"
