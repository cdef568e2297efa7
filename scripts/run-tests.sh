#!/usr/bin/env bash
# Runs every test program, prints each one's verdict and a closing "N passed, N failed" line.
# Usage: run-tests.sh BUILD_DIR TEST_BIN...
build=$1; shift
passed=0; failed=0; failed_names=()
logdir="$build/test-logs"; mkdir -p "$logdir"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# tests/e2e/test_cli.c runs the versa program of the build under test
export VERSA_BIN=${VERSA_BIN:-$build/versa}
# Sanitizer builds (make asan): stop at the first error with a stack trace.  LeakSanitizer stays on:
# libgomp's thread pool, OpenBLAS's buffers and HDF5 report no leaks on this suite (OpenBLAS and
# libgomp keep theirs reachable from globals, HDF5 frees at exit), so no suppression file is needed.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# ...except in the ranks mpirun starts (2-rank tests): Open MPI does not free what MPI_Init
# allocates (~3300 blocks: MCA parameter strings, PMIx state) and unloads its components at
# MPI_Finalize, so the reports cannot even be attributed to a library for a suppression file.
# mpirun hands mca_base_env_list to the ranks only; every other process keeps leak checking.
export OMPI_MCA_mca_base_env_list=${OMPI_MCA_mca_base_env_list:-"ASAN_OPTIONS=detect_leaks=0:halt_on_error=1"}
suite_start=$(date +%s)
for t in "$@"; do
  name=${t#"$build"/tests/}
  log="$logdir/${name//\//_}.log"
  start=$(date +%s%N)
  if "$t" >"$log" 2>&1; then status=ok; else status=FAIL; fi
  secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}')
  # cmocka prints one "[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s)" line per group
  np=$(grep -Eo '\[  PASSED  \] [0-9]+' "$log" | awk '{s+=$NF} END{print s+0}')
  nf=$(grep -Eo '\[  FAILED  \] [0-9]+' "$log" | awk '{s+=$NF} END{print s+0}')
  if [ "$status" = FAIL ] && [ "$nf" = 0 ]; then nf=1; fi   # crashed before reporting
  passed=$((passed + np)); failed=$((failed + nf))
  printf '%-4s %-40s %4d passed %3d failed  %6ss\n' "$status" "$name" "$np" "$nf" "$secs"
  if [ "$status" = FAIL ]; then failed_names+=("$name"); sed 's/^/    | /' "$log" | tail -40; fi
done
echo "tests: $passed passed, $failed failed ($(( $(date +%s) - suite_start ))s)"
[ ${#failed_names[@]} -eq 0 ]
