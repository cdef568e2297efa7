#!/usr/bin/env bash
# bench/distill_evidence.sh — stage 2 evidence in miniature (issue 6): does relational distillation
# from a stage-1 teacher give the student features that transfer to tasks it was NOT supervised on?
#
#   synthetic VinDr + CBIS-DDSM layouts (versa synth) -> versa prepare (64 px)
#   stage 1: a ViT-Ti/16 teacher (configs/pretrain/vit_tiny_cpu_quick.yaml) on the VinDr set
#            -> versa extract (the teacher's GAP feature of every image)
#   stage 2: three EfficientNet-B0 students on the VinDr train split, same seed and steps:
#            distilled   BI-RADS + density CE (x10) + relational KD (x1) + relation term (x1)
#            supervised  the same CE only (KD and relation weights 0)
#            random      no training (the initialisation)
#   probes:  frozen pooled features, `versa distill --probe`: cosine k-NN, retrieval top-1 and a
#            logistic regression, balanced accuracy on the test split, for tasks the students were
#            not trained on: finding type (VinDr findings: Mass, Suspicious Calcification; CBIS
#            mass vs calcification) and malignancy (CBIS pathology).  VinDr BI-RADS and density,
#            which two of the students were trained on, are probed too, for reference.
#
# Usage: bash bench/distill_evidence.sh [BUILD_DIR] [WORK_DIR]
# Knobs (environment): PATIENTS (200), TEACHER_STEPS (300), STUDENT_STEPS (300), SIZE (64),
#   SEEDS ("1 2 3": students and probes are repeated per seed; the table gives mean +- sd).
# Not run by the tests.  Writes WORK_DIR/results.md and prints it.
set -euo pipefail
build=${1:-build}
work=${2:-runs/distill_evidence}
PATIENTS=${PATIENTS:-200}
TEACHER_STEPS=${TEACHER_STEPS:-300}
STUDENT_STEPS=${STUDENT_STEPS:-300}
SIZE=${SIZE:-64}
SEEDS=${SEEDS:-"1 2 3"}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
versa="$build/versa"
[ -x "$versa" ] || { echo "distill_evidence: $versa not found (make BUILD=$build)"; exit 1; }
mkdir -p "$work"
t_start=$(date +%s)
log() { echo "== $* ($(( $(date +%s) - t_start )) s)"; }

# ---- data ----
if [ ! -f "$work/vindr.h5" ]; then
  log "synthetic data: $PATIENTS patients"
  "$versa" synth "$work/raw" --patients "$PATIENTS" --size 208x256 --formats vindr,cbis --seed 7 2>/dev/null
  "$versa" prepare vindr "$work/raw/vindr-mammo" "$work/vindr.h5" --size ${SIZE}x${SIZE}
  "$versa" prepare cbis "$work/raw/cbis-ddsm" "$work/cbis.h5" --size ${SIZE}x${SIZE}
fi

# ---- stage 1 teacher + features ----
if [ ! -f "$work/teacher_features.h5" ]; then
  log "stage 1: ViT-Ti teacher, $TEACHER_STEPS iterations"
  "$versa" pretrain configs/pretrain/vit_tiny_cpu_quick.yaml "data.sources=[$work/vindr.h5]" \
    "train.output_dir=$work/teacher" "train.max_iterations=$TEACHER_STEPS" \
    "optim.epochs=$(( (TEACHER_STEPS + 9) / 10 ))" train.log_every=50 train.checkpoint_every=100
  "$versa" extract "$work/teacher/checkpoint.h5" "$work/vindr.h5" "$work/teacher_features.h5"
fi

# ---- stage 2 students and probes ----
common=(configs/distill/enb0_cpu_quick.yaml "data.prepared=$work/vindr.h5"
        "teacher.features=$work/teacher_features.h5" "student.image_size=$SIZE" "student.static_padding_size=$SIZE"
        "train.max_steps=$STUDENT_STEPS" train.log_every=50 train.checkpoint_every=1000)
probe() {   # probe NAME CHECKPOINT SEED
  local name=$1 ckpt=$2 seed=$3
  "$versa" distill --probe "${common[@]}" "train.seed=$seed" "probe.checkpoint=$ckpt" \
    "probe.tasks=[findings:Mass, findings:Suspicious Calcification, birads, density]" "probe.output=$work/probe_${name}_vindr_s$seed.json" >/dev/null
  "$versa" distill --probe "${common[@]}" "train.seed=$seed" "data.prepared=$work/cbis.h5" "probe.checkpoint=$ckpt" \
    "probe.tasks=[pathology, findings:mass]" "probe.output=$work/probe_${name}_cbis_s$seed.json" >/dev/null
}
for seed in $SEEDS; do
  for kind in distilled supervised; do
    out="$work/student_${kind}_s$seed"
    if [ ! -f "$out/checkpoint.h5" ]; then
      log "stage 2: $kind student, seed $seed, $STUDENT_STEPS steps"
      extra=()
      [ "$kind" = supervised ] && extra=(loss.kd_weight=0 loss.contrastive_weight=0)
      "$versa" distill "${common[@]}" "train.seed=$seed" "train.output_dir=$out" "${extra[@]}"
    fi
    log "probe: $kind, seed $seed"
    probe "$kind" "$out/checkpoint.h5" "$seed"
  done
  log "probe: random init, seed $seed"
  probe random "" "$seed"
done

# ---- table (awk over the probes' JSON: one task per line) ----
awk -v seeds="$SEEDS" '
  function field(line, key,    m) {
    if (match(line, "\"" key "\": *\"?[^,\"}]*")) { m = substr(line, RSTART, RLENGTH); sub(/^[^:]*: *"?/, "", m); return m }
    return ""
  }
  FNR == 1 { n = split(FILENAME, parts, "/"); split(parts[n], f, "_"); kind = f[2]; ds = f[3] }
  /"task":/ {
    task = ds ":" field($0, "task"); if (!(task in tasks)) { tasks[task] = 1; order[++nt] = task }
    meta[task] = field($0, "train") "/" field($0, "test"); chance[task] = field($0, "chance")
    for (k = 1; k <= 3; k++) { m = (k == 1 ? "logreg_bacc" : k == 2 ? "knn_bacc" : "top1"); v = field($0, m) + 0
      key = task SUBSEP kind SUBSEP m; s1[key] += v; s2[key] += v * v; cnt[key]++ }
  }
  END {
    printf "Frozen-feature probes on the test split, mean +- sd over seeds %s (balanced accuracy unless noted)\n\n", seeds
    split("logreg_bacc knn_bacc top1", ms, " "); split("logistic regression|k-NN (cosine, k=10)|retrieval top-1 (accuracy)", ts, "|")
    for (i = 1; i <= 3; i++) {
      printf "### %s\n\n| task | train/test | chance | distilled | supervised only | random init |\n|---|---|---|---|---|---|\n", ts[i]
      for (j = 1; j <= nt; j++) {
        t = order[j]; printf "| %s | %s | %.3f |", t, meta[t], chance[t]
        split("distilled supervised random", ks, " ")
        for (k = 1; k <= 3; k++) { key = t SUBSEP ks[k] SUBSEP ms[i]; c = cnt[key]; mu = s1[key] / c
          sd = c > 1 ? sqrt((s2[key] - c * mu * mu) / (c - 1) > 0 ? (s2[key] - c * mu * mu) / (c - 1) : 0) : 0
          printf " %.3f +- %.3f |", mu, sd }
        printf "\n"
      }
      printf "\n"
    }
  }' "$work"/probe_*_s*.json > "$work/results.md"
cat "$work/results.md"
log "done"
