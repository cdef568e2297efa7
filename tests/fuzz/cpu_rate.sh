#!/usr/bin/env bash
# CPU seconds per execution of fuzz targets (user + sys), independent of the machine's load —
# what a target can do on a free core (docs/robustness.md, campaign).  For each target: -runs=R
# on a scratch copy of its seed corpus, minus a -runs=0 pass over the same seeds.
#
#   tests/fuzz/cpu_rate.sh BUILD R TARGET...      e.g. tests/fuzz/cpu_rate.sh build-fuzz 3000 csv dicom
set -uo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 3 ] || { sed -n '2,6p' "$0"; exit 2; }
build=$1 R=$2; shift 2
export OMP_NUM_THREADS=1 VERSA_THREADS=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
cpu() { /usr/bin/time -f "%U %S" "$@" 2>&1 >/dev/null | tail -1 | awk '{print $1 + $2}'; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "$@"; do
  b=$build/fuzz/fuzz_$t
  [ -x "$b" ] || { echo "cpu_rate: no $b (make fuzz-build)" >&2; continue; }
  rm -rf "$work/c" && mkdir -p "$work/c" && cp tests/fuzz/corpus/$t/* "$work/c/"
  ns=$(ls "$work/c" | wc -l)
  c0=$(cpu nice -n 19 "$b" -runs=0 -rss_limit_mb=2048 -malloc_limit_mb=2048 "$work/c")
  rm -rf "$work/c" && mkdir -p "$work/c" && cp tests/fuzz/corpus/$t/* "$work/c/"
  c1=$(cpu nice -n 19 "$b" -runs="$R" -seed=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 "$work/c")
  awk -v t="$t" -v c0="$c0" -v c1="$c1" -v r="$R" -v ns="$ns" 'BEGIN { d = c1 - c0; n = r - ns;
    printf "%-11s %6.2f ms CPU/exec  %7.0f exec per CPU-second  1M in %5.1f min  (%d runs, %.2f s CPU)\n",
      t, (d > 0 ? 1000 * d / n : 0), (d > 0 ? n / d : 0), (d > 0 ? 1e6 * d / n / 60 : 0), n, d }'
done
