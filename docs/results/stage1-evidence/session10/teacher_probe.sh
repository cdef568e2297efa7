#!/bin/bash
# Session 10, experiments A-G: pretrain a ViT-Ti/16 teacher (vit_tiny_cpu.yaml + the evidence
# script's EXTRA) on P, then probe CBIS pathology on the lesion crops of D, teacher vs its own
# initialisation (a 1-step run at LR 0), GAP and CLS features at 96 px.  Run from the repo root.
#   P      pretraining source (default D/synth-cbis.h5: the whole CBIS-layout images)
#   D      folder holding the probe data synth-cbis.h5;  O  output folder
#   IT     iterations (1000);  T  threads (2);  EXTRA  more key=value overrides (later keys win)
# A: D=runs/x10/c3 O=runs/x10/A IT=600 T=1 EXTRA="crops.global_crops_scale=[0.03,0.2] crops.local_crops_scale=[0.005,0.03]"
# B: D=runs/x10/c3big O=runs/x10/B EXTRA="crops.global_crops_scale=[0.05,0.4] crops.local_crops_scale=[0.01,0.05]"
# C: P=runs/x10/roi/roi.h5 D=runs/x10/c1big O=runs/x10/C        (roi.h5: roi_crops.py, README.md)
# D: as C with O=runs/x10/D EXTRA="crops.blur_p=[0,0,0] crops.solarize_p=0"
# E: as C with O=runs/x10/E IT=3000
# F: P=runs/x10/roi3/roi.h5 D=runs/x10/c3big O=runs/x10/F T=1   (roi3: the same crops of c3big)
# G: as D with O=runs/x10/G EXTRA="crops.blur_p=[0,0,0] crops.solarize_p=0 crops.global_crops_scale=[0.6,1.0] crops.local_crops_scale=[0.2,0.6]"
set -e
D=${D:?probe data folder}; O=${O:?output folder}; P=${P:-$D/synth-cbis.h5}; IT=${IT:-1000}
mkdir -p "$O"
. bench/blas_core.sh   # the best OpenBLAS kernels for this CPU
export OMP_WAIT_POLICY=PASSIVE VERSA_THREADS=${T:-2} OMP_NUM_THREADS=${T:-2}
K="configs/pretrain/vit_tiny_cpu.yaml data.sources=[$P] train.OFFICIAL_EPOCH_LENGTH=50 optim.epochs=$(( (IT+49)/50 )) optim.base_lr=0.004 crops.brightness=0.6 crops.contrast=0.6 ${EXTRA:-}"
# shellcheck disable=SC2086
[ -f "$O/init/checkpoint.h5" ] || ./build/versa pretrain $K "train.output_dir=$O/init" train.max_iterations=1 train.checkpoint_every=1 >"$O/init.log" 2>&1
# shellcheck disable=SC2086
[ -f "$O/teacher/checkpoint.h5" ] || /usr/bin/time -f "%e s" -o "$O/time.txt" ./build/versa pretrain $K "train.output_dir=$O/teacher" \
  "train.max_iterations=$IT" "train.checkpoint_every=$IT" train.log_every=50 >"$O/teacher.log" 2>&1
mkdir -p "$O/data"
ln -sf "$(realpath "$D/synth-cbis.h5")" "$O/data/synth-cbis.h5"
./build/versa bench --suite synthetic --data-root "$O/data" --out "$O/bench" --only syn_cbis_pathology \
  --model "init=ckpt:$O/init/checkpoint.h5:teacher:96" --model "teacher=ckpt:$O/teacher/checkpoint.h5:teacher:96" \
  --model "init_cls=ckpt:$O/init/checkpoint.h5:teacher:96:feature=cls" \
  --model "teacher_cls=ckpt:$O/teacher/checkpoint.h5:teacher:96:feature=cls" \
  --baseline init input.mean=0.449 input.std=0.226 --quiet >"$O/bench.log" 2>&1
echo "done: $O/bench/paired.csv"
