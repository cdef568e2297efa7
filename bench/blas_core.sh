# shellcheck shell=bash
# bench/blas_core.sh — sourced by the benchmark and evidence scripts: run OpenBLAS on the best
# kernels of this CPU.  OpenBLAS picks kernels from the CPU model; on a model it does not know (a
# virtual machine's "Intel Xeon Processor") it falls back to its generic Prescott kernels, several
# times slower (versa info shows the core), and some machines preset a weaker core.  Sets
# OPENBLAS_CORETYPE to SkylakeX with AVX-512, else Haswell (Zen on AMD) with AVX2; `preset`
# keeps the value that was set before, for the reports.
preset=${OPENBLAS_CORETYPE:-}
if grep -qw avx512f /proc/cpuinfo; then best=SkylakeX
elif grep -qw avx2 /proc/cpuinfo; then
  if grep -q AuthenticAMD /proc/cpuinfo; then best=Zen; else best=Haswell; fi
else best=""; fi
if [ -n "$best" ]; then export OPENBLAS_CORETYPE=$best; elif [ -n "$preset" ]; then unset OPENBLAS_CORETYPE; fi
