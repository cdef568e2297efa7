#!/bin/bash
# mass vs calcification (syn_cbis_finding) for a teacher_probe.sh output folder O
set -e
O=${O:?}
. bench/blas_core.sh
export OMP_WAIT_POLICY=PASSIVE VERSA_THREADS=${T:-1} OMP_NUM_THREADS=${T:-1}
./build/versa bench --suite synthetic --data-root "$O/data" --out "$O/bench_finding" --only syn_cbis_finding \
  --model "init=ckpt:$O/init/checkpoint.h5:teacher:96" --model "teacher=ckpt:$O/teacher/checkpoint.h5:teacher:96" \
  --model "init_cls=ckpt:$O/init/checkpoint.h5:teacher:96:feature=cls" \
  --model "teacher_cls=ckpt:$O/teacher/checkpoint.h5:teacher:96:feature=cls" \
  --baseline init input.mean=0.449 input.std=0.226 --quiet >"$O/bench_finding.log" 2>&1
grep -E ",(auc|knn_auc)," "$O/bench_finding/results.csv" "$O/bench_finding/paired.csv"
