#!/usr/bin/env bash
# Fuzzing driver (see tests/fuzz/fuzz.h and docs/robustness.md).
#
#   scripts/fuzz.sh deps                           install clang + libFuzzer (Debian) if missing
#   scripts/fuzz.sh run BUILD SECONDS [TARGET...]  each target (default: all) for SECONDS
#   scripts/fuzz.sh report BUILD                   per-target executions / coverage from the logs
#   scripts/fuzz.sh campaign BUILD SECONDS [T...]  all targets at once, fork mode, nice (long runs)
#   scripts/fuzz.sh campaign-report BUILD          executions / coverage / crashes of a campaign
#   scripts/fuzz.sh seeds BUILD                    regenerate tests/fuzz/corpus/ (BUILD: a normal
#                                                  gcc build folder for the seed writer)
#
# `run` keeps a working corpus per target in BUILD/corpus/<target> (seeded from the committed
# tests/fuzz/corpus/<target>, which it never modifies), crash / leak / timeout inputs in
# BUILD/artifacts/<target>/ and the libFuzzer log in BUILD/logs/<target>.log; it prints one line
# per target and fails when any target found a problem.  Every target gets -rss_limit_mb=2048
# (the same malloc limit) and -timeout=60 (one input slower than that is a hang; FUZZ_TIMEOUT).
# FUZZ_FLAGS adds libFuzzer flags; FUZZ_NICE (e.g. 10) runs the targets under `nice`.
set -uo pipefail
cd "$(dirname "$0")/.."

cmd=${1:-}
shift || true

deps() {
  if command -v clang >/dev/null && ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
    return 0
  fi
  echo "fuzz: installing clang and libFuzzer (Debian: clang libclang-rt-dev)"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "fuzz: not root and no sudo; install clang libclang-rt-dev" >&2; exit 1; }
    sudo=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends clang libclang-rt-dev
}

# stat lines of the libFuzzer log: executions, and the last coverage report
summarize() {   # target log status seconds
  local t=$1 log=$2 status=$3 secs=$4
  local execs cov ft corp rate
  execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  ft=$(grep -Eo 'ft: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  corp=$(grep -Eo 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | awk '{print $2}')
  rate=$(awk -v e="${execs:-0}" -v s="$secs" 'BEGIN{printf "%.0f", (s > 0 ? e / s : 0)}')
  printf '%-4s %-18s %10s execs %7s exec/s  cov %6s  ft %7s  corpus %s  (%ss)\n' \
    "$status" "$t" "${execs:-?}" "$rate" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$secs"
}

run() {
  local build=$1 secs=$2; shift 2
  local targets=("$@")
  if [ ${#targets[@]} -eq 0 ]; then
    for b in "$build"/fuzz/fuzz_*; do [[ $b == *.d ]] || targets+=("$(basename "$b")"); done
  fi
  mkdir -p "$build/logs"
  local failed=()
  export OMP_NUM_THREADS=1 VERSA_THREADS=1 OPENBLAS_NUM_THREADS=1
  # leaks are bugs too; UBSan reports abort (the library is built with -fno-sanitize-recover)
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  local nice=()
  [ -n "${FUZZ_NICE:-}" ] && nice=(nice -n "$FUZZ_NICE")
  for t in "${targets[@]}"; do
    t=${t#fuzz_}
    local bin="$build/fuzz/fuzz_$t" work="$build/corpus/$t" art="$build/artifacts/$t/" log="$build/logs/$t.log"
    [ -x "$bin" ] || { echo "fuzz: no $bin (make fuzz-build)" >&2; failed+=("$t"); continue; }
    mkdir -p "$work" "$art"
    local seeds=()
    [ -d "tests/fuzz/corpus/$t" ] && seeds=("tests/fuzz/corpus/$t")
    local dict=()
    [ -f "tests/fuzz/dict/$t.dict" ] && dict=("-dict=tests/fuzz/dict/$t.dict")
    local start=$SECONDS status=ok
    # shellcheck disable=SC2086
    "${nice[@]}" "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=${FUZZ_TIMEOUT:-60} \
      -print_final_stats=1 -artifact_prefix="$art" "${dict[@]}" ${FUZZ_FLAGS:-} "$work" "${seeds[@]}" >"$log" 2>&1 \
      || status=FAIL
    summarize "$t" "$log" "$status" $((SECONDS - start))
    if [ "$status" = FAIL ]; then
      failed+=("$t")
      grep -E 'ERROR|SUMMARY|property violated|runtime error|Test unit written' "$log" | head -8 | sed 's/^/    | /'
    fi
  done
  if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: problems in: ${failed[*]} (inputs in $build/artifacts/, logs in $build/logs/)"
    return 1
  fi
  echo "fuzz: ${#targets[@]} targets, no crash"
}

# A long campaign: every target at once, in the background-friendly fork mode (a crash, leak,
# timeout or OOM is saved to BUILD/campaign/<target>/artifacts/ and fuzzing goes on), under
# nice -n ${FUZZ_NICE:-10}.  `campaign-report` summarises the logs while or after it runs.
campaign() {
  local build=$1 secs=$2; shift 2
  local targets=("$@")
  if [ ${#targets[@]} -eq 0 ]; then
    for b in "$build"/fuzz/fuzz_*; do [[ $b == *.d ]] || targets+=("$(basename "$b")"); done
  fi
  export OMP_NUM_THREADS=1 VERSA_THREADS=1 OPENBLAS_NUM_THREADS=1
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:quarantine_size_mb=32}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  local pids=() stamp
  stamp=$(date +%Y%m%d-%H%M%S)
  for t in "${targets[@]}"; do
    t=${t#fuzz_}
    local dir="$build/campaign/$t"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    # a private copy: rebuilding during a campaign must not swap the binary under the fork jobs
    cp "$build/fuzz/fuzz_$t" "$dir/fuzz_$t"
    local seeds=()
    [ -d "tests/fuzz/corpus/$t" ] && seeds=("tests/fuzz/corpus/$t")
    nice -n "${FUZZ_NICE:-10}" "$dir/fuzz_$t" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
      -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=${FUZZ_TIMEOUT:-60} \
      -artifact_prefix="$dir/artifacts/" ${FUZZ_FLAGS:-} "$dir/corpus" "${seeds[@]}" >"$dir/log.$stamp" 2>&1 &
    pids+=($!)
    echo "$t: pid $! log $dir/log.$stamp"
  done
  wait "${pids[@]}"
}

# fork-mode status lines: "#N: cov: C ft: F corp: K exec/s: R oom/timeout/crash: a/b/c time: Ts".
# A target's campaign may be several runs (restarted after fixes, on the same corpus): executions,
# problems and time add up over the runs' logs; coverage is the latest run's.
campaign_report() {
  local build=$1
  printf '%-11s %5s %11s %8s %6s %7s %6s  %-18s %s\n' target runs execs exec/s cov ft corpus "oom/timeout/crash" time
  for dir in "$build"/campaign/*/; do
    local t
    t=$(basename "$dir")
    for log in "$dir"/log.*; do grep -E '^#[0-9]+: cov:' "$log" | tail -1; done | awk -v t="$t" '
      { runs++; n = substr($1, 2); sub(":", "", n); N += n;
        for (i = 2; i <= NF; i++) { if ($i == "cov:") c = $(i+1); if ($i == "ft:") f = $(i+1); if ($i == "corp:") k = $(i+1);
          if ($i == "oom/timeout/crash:") { split($(i+1), o, "/"); O += o[1]; T += o[2]; C += o[3] }
          if ($i == "time:") { tm = $(i+1); sub("s$", "", tm); TM += tm } } }
      END { if (!runs) { print t ": no status yet"; exit }
        printf "%-11s %5d %11d %8.0f %6s %7s %6s  %-18s %ss\n", t, runs, N, (TM > 0 ? N / TM : 0), c, f, k, O "/" T "/" C, TM }'
  done
}

report() {
  local build=$1
  for log in "$build"/logs/*.log; do
    local t secs
    t=$(basename "$log" .log)
    secs=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 | awk '{print $5}')
    summarize "$t" "$log" "log" "${secs:-0}"
  done
}

seeds() {
  local build=$1 c=tests/fuzz/corpus fx=tests/data/fixtures sep=$'\n=====\n'
  make --no-print-directory BUILD="$build" WERROR= "$build/libversa.a" >/dev/null || exit 1
  # shellcheck disable=SC2046
  cc -std=c11 -O1 -D_GNU_SOURCE -I. -I/usr/include/hdf5/serial -I/usr/lib/x86_64-linux-gnu/openmpi/include \
    tests/fuzz/make_seeds.c "$build/libversa.a" -fopenmp -L/usr/lib/x86_64-linux-gnu/openblas-openmp \
    -L/usr/lib/x86_64-linux-gnu/hdf5/serial -L/usr/lib/x86_64-linux-gnu/openmpi/lib \
    -lopenblas -lhdf5 -lmpi -lyaml -lopenjp2 -ljpeg -lz -lm -lpthread -o "$build/make_seeds" || exit 1
  rm -rf "$c" && mkdir -p "$c"
  for t in dicom image csv vindr cbis cmmd rsna embed mias manifest inbreast xlsx config; do mkdir -p "$c/$t"; done
  cp $fx/*.dcm "$c/dicom/"
  cp "$fx/cbis-ddsm/Mass-Training_P_00001_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.111.1/1.3.6.1.4.1.9590.100.1.2.222.1/000000.dcm" "$c/dicom/roi_mask.dcm"
  cp $fx/*.png $fx/*.pgm $fx/*.jpg "$c/image/"
  cp "$fx/manifest/img/case0_mask.png" "$c/image/mask.png"
  cp $fx/*.csv "$c/csv/"
  cp "$fx/inbreast/INbreast.csv" "$c/csv/inbreast_semicolon.csv"
  cp "$fx/rsna/train.csv" "$c/csv/rsna_train.csv"
  join() { local out=$1; shift; local first=1; : >"$out"; for f in "$@"; do [ $first = 1 ] || printf '%s' "$sep" >>"$out"; cat "$f" >>"$out"; first=0; done; }
  join "$c/vindr/fixture" $fx/vindr/breast-level_annotations.csv $fx/vindr/finding_annotations.csv
  join "$c/vindr/bad_header" $fx/vindr_bad_header/breast-level_annotations.csv $fx/vindr_bad_header/finding_annotations.csv
  join "$c/vindr/one_file" $fx/vindr/breast-level_annotations.csv
  join "$c/cbis/fixture" $fx/cbis-ddsm/mass_case_description_train_set.csv $fx/cbis-ddsm/mass_case_description_test_set.csv \
    $fx/cbis-ddsm/calc_case_description_train_set.csv $fx/cbis-ddsm/calc_case_description_test_set.csv
  local xd=/tmp/versa_xlsx_seed_$$
  rm -rf "$xd" && mkdir -p "$xd" && unzip -q -d "$xd" "$fx/cmmd/CMMD_clinicaldata_revision.xlsx"
  join "$c/xlsx/fixture_parts" $xd/xl/sharedStrings.xml $xd/xl/worksheets/sheet1.xml
  cp "$fx/cmmd/CMMD_clinicaldata_revision.xlsx" "$c/xlsx/fixture.xlsx"
  "$build/make_seeds" xlsx2csv "$fx/cmmd/CMMD_clinicaldata_revision.xlsx" >"$c/cmmd/fixture"
  rm -rf "$xd"
  join "$c/rsna/fixture" $fx/rsna/train.csv
  join "$c/embed/fixture" $fx/embed/tables/EMBED_OpenData_metadata.csv $fx/embed/tables/EMBED_OpenData_clinical.csv
  join "$c/mias/fixture" $fx/mias/Info.txt
  join "$c/manifest/fixture" $fx/manifest/manifest.csv
  join "$c/inbreast/fixture" $fx/inbreast/INbreast.csv $fx/inbreast/AllXML/22678622.xml
  join "$c/inbreast/all_xml" $fx/inbreast/INbreast.csv $fx/inbreast/AllXML/22678622.xml $fx/inbreast/AllXML/22678622.xml \
    $fx/inbreast/AllXML/22678622.xml
  for y in configs/*/*.yaml; do cp "$y" "$c/config/$(basename "$(dirname "$y")")_$(basename "$y")"; done
  { cat configs/pretrain/vit_tiny_cpu_quick.yaml; printf '%s' "$sep"
    printf 'train.max_iterations=8\ndata.sources=[a.h5, b.h5]\ncrops.global_crops_scale=[0.4, 1.0]\n+extra.key=1\n'; } \
    >"$c/config/with_overrides"
  "$build/make_seeds" hdf5 "$c" "$fx" || exit 1
  du -sh "$c"; find "$c" -type f | wc -l
}

case "$cmd" in
  deps) deps ;;
  run) [ $# -ge 2 ] || { echo "usage: $0 run BUILD SECONDS [TARGET...]" >&2; exit 2; }; run "$@" ;;
  report) report "${1:-build-fuzz}" ;;
  campaign) [ $# -ge 2 ] || { echo "usage: $0 campaign BUILD SECONDS [TARGET...]" >&2; exit 2; }; campaign "$@" ;;
  campaign-report) campaign_report "${1:-build-fuzz}" ;;
  seeds) seeds "${1:-build}" ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
