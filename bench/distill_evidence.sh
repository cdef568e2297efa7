#!/usr/bin/env bash
# bench/distill_evidence.sh — stage 2 evidence in miniature (issue 6): does relational distillation
# from a stage-1 teacher give the student features that transfer to tasks it was NOT supervised on?
#
#   data     `versa bench --make-synthetic`: synthetic VinDr (128 px) and CBIS-DDSM (256 px) sets
#   stage 1  a ViT-Ti/16 teacher (configs/pretrain/vit_tiny_cpu_quick.yaml, TEACHER_EPOCHS x 10
#            iterations) on the VinDr set, or TEACHER_CKPT; `versa extract` -> its features
#   stage 2  EfficientNet-B0 students at 64 px (configs/distill/enb0_cpu.yaml), same seed / steps:
#            distilled   BI-RADS + density CE (x10) + relational KD (x w, for w in KD_WEIGHTS) +
#                        the released relation term (x1); column "KD x w"
#            supervised  the same CE only (KD and relation weights 0)
#            random      no training (the students' common initialisation)
#            teacher     the stage-1 ViT itself, for reference (the ceiling of what can transfer)
#   probes   `versa bench --suite synthetic` on the frozen backbones (linear probe, k-NN, retrieval,
#            bootstrap CIs), on tasks the students were not supervised on: VinDr finding types
#            (multi-label), CBIS mass vs calcification and benign vs malignant on lesion crops
#            (classification and retrieval, configs/distill/evidence_tasks.yaml); VinDr BI-RADS and
#            density, which the students were trained on, for reference.
#
# Usage: bash bench/distill_evidence.sh [BUILD_DIR] [OUT_DIR]        (defaults: build runs/distill_evidence)
# Knobs (environment): PATIENTS (250), CONTRAST (1.0: the synthetic lesions' contrast, versa synth's
#   difficulty knob; other values synthesise with the suite's three commands instead), TEACHER_CKPT (reuse a stage-1 checkpoint), TEACHER_EPOCHS (15),
#   TEACHER_FEATURE (gap | cls | concat), STUDENT_STEPS (260), KD_WEIGHTS ("1": the paper's lambda1;
#   several give one distilled student each),
#   SEEDS ("1": students and the random init per seed; the table gives mean +- sd over seeds),
#   HEADS ("birads density": the students' supervised heads; "birads" leaves density as a task
#   they were not supervised on), ACQ (1: versa synth --acquisition, the display spread), SIZE (64:
#   the students' and the probes' input side).
# Steps whose output exists are not redone (delete OUT_DIR/student_* to retrain).  Not run by the
# tests.  Writes OUT_DIR/results.md (and the bench's OUT_DIR/bench/report.md) and prints the table.
set -euo pipefail
build=${1:-build}
work=${2:-runs/distill_evidence}
PATIENTS=${PATIENTS:-250}
CONTRAST=${CONTRAST:-1.0}
TEACHER_CKPT=${TEACHER_CKPT:-}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-15}
TEACHER_FEATURE=${TEACHER_FEATURE:-gap}
STUDENT_STEPS=${STUDENT_STEPS:-260}
KD_WEIGHTS=${KD_WEIGHTS:-"1"}
SEEDS=${SEEDS:-"1"}
HEADS=${HEADS:-"birads density"}
ACQ=${ACQ:-1}
SIZE=${SIZE:-64}
# the students' heads as config lists, checked before anything runs
names= classes= weights=
for h in $HEADS; do
  case $h in
    birads) c="'1 2 3 4 5'" ;;
    density) c="'A B C D'" ;;
    *) echo "distill_evidence: HEADS: '$h' is not birads or density"; exit 1 ;;
  esac
  names+="${names:+, }$h"; classes+="${classes:+, }$c"; weights+="${weights:+, }1.0"
done
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
versa="$build/versa"
[ -x "$versa" ] || { echo "distill_evidence: $versa not found (make BUILD=$build)"; exit 1; }
mkdir -p "$work"
t_start=$(date +%s)
log() { echo "== $* ($(( $(date +%s) - t_start )) s)"; }
data="$work/data"

# ---- data ----
if [ ! -f "$data/synth-vindr.h5" ] || [ ! -f "$data/synth-cbis.h5" ]; then
  log "synthetic data: $PATIENTS patients, lesion contrast $CONTRAST, display spread $ACQ"
  if [ "$CONTRAST" = 1.0 ] || [ "$CONTRAST" = 1 ]; then
    "$versa" bench --make-synthetic "$data" --patients "$PATIENTS" --acquisition "$ACQ"
  else   # the commands of configs/bench/synthetic.yaml, with the contrast
    "$versa" synth "$data/raw" --patients "$PATIENTS" --size 256x320 --formats vindr,cbis --contrast "$CONTRAST" \
      --acquisition "$ACQ"
    "$versa" prepare vindr "$data/raw/vindr-mammo" "$data/synth-vindr.h5" --size 128x128
    "$versa" prepare cbis "$data/raw/cbis-ddsm" "$data/synth-cbis.h5" --size 256x256
  fi
fi

# ---- stage 1 teacher + features ----
teacher=${TEACHER_CKPT:-$work/teacher/checkpoint.h5}
if [ ! -f "$teacher" ]; then
  log "stage 1: ViT-Ti teacher, $TEACHER_EPOCHS x 10 iterations"
  "$versa" pretrain configs/pretrain/vit_tiny_cpu_quick.yaml "data.sources=[$data/synth-vindr.h5]" \
    "train.output_dir=$work/teacher" "optim.epochs=$TEACHER_EPOCHS" train.log_every=10 train.checkpoint_every=50
fi
feats="$work/teacher_features.h5"
if [ ! -f "$feats" ]; then
  log "extract: teacher features of the VinDr set"
  "$versa" extract "$teacher" "$data/synth-vindr.h5" "$feats"
fi

# ---- stage 2 students ----
common=(configs/distill/enb0_cpu.yaml "data.prepared=$data/synth-vindr.h5" "teacher.features=$feats"
        "heads.names=[$names]" "heads.labels=[$names]" "heads.classes=[$classes]" "heads.weights=[$weights]"
        "teacher.feature=$TEACHER_FEATURE" "student.image_size=$SIZE" "student.static_padding_size=$SIZE"
        "train.max_steps=$STUDENT_STEPS" train.log_every=20 train.checkpoint_every=1000)
models=()
kinds=()
for w in $KD_WEIGHTS; do kinds+=("kd$w"); done
kinds+=(supervised)
for seed in $SEEDS; do
  for kind in "${kinds[@]}"; do
    out="$work/student_${kind}_s$seed"
    [ "$kind" = kd1 ] && out="$work/student_distilled_s$seed"   # the paper's weight
    if [ ! -f "$out/checkpoint.h5" ]; then
      log "stage 2: $kind student, seed $seed, $STUDENT_STEPS steps"
      if [ "$kind" = supervised ]; then extra=(loss.kd_weight=0 loss.contrastive_weight=0)
      else extra=("loss.kd_weight=${kind#kd}"); fi
      "$versa" distill "${common[@]}" "train.seed=$seed" "train.output_dir=$out" "${extra[@]}"
    fi
    models+=(--model "${kind}_s$seed=effnet-ckpt:$out/checkpoint.h5:efficientnet-b0:$SIZE")
  done
  models+=(--model "random_s$seed=random:efficientnet-b0:$SIZE:seed=$seed")
done
models+=(--model "teacher=ckpt:$teacher:teacher:$SIZE")

# ---- frozen-feature probes (versa bench) ----
log "probes: versa bench on ${#models[@]} / 2 models"
"$versa" bench --suite synthetic --tasks configs/distill/evidence_tasks.yaml --data-root "$data" --out "$work/bench" \
  --only 'syn_vindr_finding,syn_cbis_finding,syn_cbis_pathology,dx_*,syn_vindr_birads,syn_vindr_density,syn_cbis_density' \
  --quiet "input.size=$SIZE" "${models[@]}"

# ---- table: primary metrics, mean +- sd over seeds (awk over results.csv) ----
awk -F, -v seeds="$SEEDS" -v steps="$STUDENT_STEPS" -v kinds="${kinds[*]} random teacher" -v tfeat="$TEACHER_FEATURE" \
    -v heads="$HEADS" -v size="$SIZE" '
  NR == 1 { next }
  {
    model = $1; task = $2; metric = $4; v = $5 + 0
    kind = model; sub(/_s[0-9]+$/, "", kind)
    if (!(metric == "auc" || metric == "knn_auc" || metric == "top1")) next
    key = task SUBSEP metric
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
    k2 = key SUBSEP kind; s1[k2] += v; s2[k2] += v * v; c[k2]++
    if (match(model, /_s[0-9]+$/)) { sd = substr(model, RSTART + 2); val[k2 SUBSEP sd] = v; nseed[sd] = 1 }
  }
  # seeds on which the first distilled student beats `other` (students and random init share each seed)
  function wins(key, kd, other,    sd, w, t) {
    w = t = 0
    for (sd in nseed)
      if ((key SUBSEP kd SUBSEP sd) in val && (key SUBSEP other SUBSEP sd) in val) {
        t++; w += val[key SUBSEP kd SUBSEP sd] > val[key SUBSEP other SUBSEP sd]
      }
    return t ? w "/" t : "-"
  }
  function cell(k2,    m, sd) {
    if (!(k2 in c)) return "-"
    m = s1[k2] / c[k2]; sd = c[k2] > 1 ? (s2[k2] - c[k2] * m * m) / (c[k2] - 1) : 0
    return c[k2] > 1 ? sprintf("%.3f +- %.3f", m, sd > 0 ? sqrt(sd) : 0) : sprintf("%.3f", m)
  }
  function sup(t,    hs, j) { split(heads, hs, " "); for (j in hs) if (t ~ hs[j]) return 1; return 0 }
  function name(k) {
    if (k ~ /^kd/) return "KD x " substr(k, 3)
    return k == "supervised" ? "supervised only" : k == "random" ? "random init" : k == "teacher" ? "stage-1 teacher (ViT-Ti)" : k
  }
  END {
    printf "Frozen-feature probes on the synthetic test splits (versa bench: linear probe AUC, k-NN AUC,\n"
    printf "retrieval top-1), EfficientNet-B0 students at %s px after %s steps; \"KD x w\" = distilled with KD weight w\n", size, steps
    printf "(CE weight 10, relation term 1), teacher feature %s; seeds %s (mean +- sd when several).\n", tfeat, seeds
    printf "Tasks above the line were NOT supervised in stage 2.\n\n"
    nk = split(kinds, ks, " ")
    ns = 0; for (sd in nseed) ns++
    paired = ns > 1 && ks[1] ~ /^kd/   # the last column: per-seed wins of the first distilled student
    printf "| task | metric |"; for (j = 1; j <= nk; j++) printf " %s |", name(ks[j])
    if (paired) printf " %s > supervised, > random (seeds) |", name(ks[1])
    printf "\n|---|---|"; for (j = 1; j <= nk + paired; j++) printf "---|"; printf "\n"
    for (pass = 0; pass < 2; pass++) {
      if (pass == 1) { printf "| *supervised in stage 2:* | |"; for (j = 1; j <= nk + paired; j++) printf " |"; printf "\n" }
      for (i = 1; i <= n; i++) {
        split(order[i], kk, SUBSEP); if (sup(kk[1]) != pass) continue
        printf "| %s | %s |", kk[1], kk[2]
        for (j = 1; j <= nk; j++) printf " %s |", cell(order[i] SUBSEP ks[j])
        if (paired) printf " %s, %s |", wins(order[i], ks[1], "supervised"), wins(order[i], ks[1], "random")
        printf "\n"
      }
    }
  }' "$work/bench/results.csv" > "$work/results.md"
cat "$work/results.md"
log "done: $work/results.md, details and CIs in $work/bench/report.md"
