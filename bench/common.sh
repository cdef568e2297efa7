# shellcheck shell=bash
# bench/common.sh — sourced by the performance reports (bench/run*.sh): the environment every
# engine-vs-PyTorch measurement shares.
#   threads   VERSA_THREADS, else OMP_NUM_THREADS, else nproc — the same count for both sides
#   rounds    BENCH_ROUNDS (default 2): each side keeps its best round
#   OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning (other processes, the
#             loader's workers and the other side share the cores)
#   OPENBLAS_CORETYPE: set to the best core for this CPU, for both sides (PyTorch's libblas is
#             the same OpenMP OpenBLAS): a preset value (some machines force Haswell) is replaced,
#             and an unset one too, since OpenBLAS falls back to its generic Prescott kernels on CPU
#             models it does not know (virtual machines); `preset` keeps what was set, for the report
#   python, have_torch, preload (tcmalloc for the PyTorch side when installed), out (a scratch
#   folder removed on exit)
threads=${VERSA_THREADS:-${OMP_NUM_THREADS:-$(nproc)}}
rounds=${BENCH_ROUNDS:-2}
export VERSA_THREADS=$threads OMP_NUM_THREADS=$threads
export OMP_WAIT_POLICY=PASSIVE
# shellcheck source=bench/blas_core.sh
. "$(dirname "${BASH_SOURCE[0]}")/blas_core.sh"
python=/usr/bin/python3
have_torch=0
if [ -x "$python" ] && "$python" -c 'import torch' 2>/dev/null; then have_torch=1; fi
tcmalloc=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
preload=""
[ -f "$tcmalloc" ] && preload=$tcmalloc
# without tcmalloc PyTorch is not tuned as the comparison promises (glibc malloc: +4 % CPU on the
# stage-1 step here): say so rather than report the ratio quietly
[ $have_torch = 1 ] && [ -z "$preload" ] &&
  echo "bench: $tcmalloc not found, PyTorch runs without tcmalloc (make deps-reference installs it)" >&2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
