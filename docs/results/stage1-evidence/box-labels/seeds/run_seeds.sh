# the ev9 setting (2 threads, 1000 iterations, the script's EXTRA keys) with train.seed=S, each against its own init
# run from the repository root, after bash bench/pretrain_evidence.sh build runs/ev9
export OMP_WAIT_POLICY=PASSIVE VERSA_THREADS=2 OMP_NUM_THREADS=2 OPENBLAS_CORETYPE=SkylakeX
D=runs/ev9/data; R=runs/seeds; mkdir -p $R
K="train.OFFICIAL_EPOCH_LENGTH=50 optim.epochs=20 optim.base_lr=0.004 crops.brightness=0.6 crops.contrast=0.6"
for s in 1 2; do
  /usr/bin/time -f "%e s wall, %U s user, %M KB" -o $R/t$s.time build/versa pretrain configs/pretrain/vit_tiny_cpu.yaml "data.sources=[$D/synth-vindr.h5]" train.output_dir=$R/t$s train.max_iterations=1000 train.log_every=50 train.checkpoint_every=1000 train.seed=$s $K > $R/t$s.log 2>&1
  build/versa pretrain configs/pretrain/vit_tiny_cpu.yaml "data.sources=[$D/synth-vindr.h5]" train.output_dir=$R/i$s train.max_iterations=1 train.log_every=1 train.checkpoint_every=1 train.seed=$s $K > $R/i$s.log 2>&1
  build/versa bench --suite synthetic --tasks runs/ev9/tasks.yaml --data-root $D --out $R/b$s \
    --only syn_vindr_density,syn_cbis_density,syn_cbis_malignancy,syn_cbis_pathology \
    --model "init=ckpt:$R/i$s/checkpoint.h5:teacher:96" --model "teacher=ckpt:$R/t$s/checkpoint.h5:teacher:96" \
    --baseline init input.mean=0.449 input.std=0.226 --quiet > $R/b$s.log 2>&1
done
echo done > $R/DONE
