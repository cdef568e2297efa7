# versamammo.c — one library (build/libversa.a), one program (build/versa), tests, benchmarks.
# `make demo` and `make test` install missing Debian packages first (scripts/install-deps.sh).

BUILD    ?= build
CC       ?= gcc
# x86-64-v4 on AVX-512 machines, v3 with AVX2, plain x86-64 otherwise
MARCH    ?= $(shell if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then echo x86-64-v4; \
              elif grep -qw avx2 /proc/cpuinfo 2>/dev/null; then echo x86-64-v3; else echo x86-64; fi)
OPT      ?= -O3
SAN      ?=

ARCH_LIB  := /usr/lib/x86_64-linux-gnu
BLAS_DIR  := $(ARCH_LIB)/openblas-openmp
HDF5_DIR  := $(ARCH_LIB)/hdf5/serial
MPI_DIR   := $(ARCH_LIB)/openmpi

CPPFLAGS := -I. -I/usr/include/x86_64-linux-gnu/openblas-openmp -I/usr/include/hdf5/serial \
            -I$(MPI_DIR)/include -I/usr/include/stb -D_GNU_SOURCE
WERROR   ?= -Werror
# -fno-math-errno: sqrtf and friends never set errno, so loops that call them vectorise (the
# results are the same correctly rounded values; nothing reads errno after a math call)
CFLAGS   := -std=c11 $(OPT) -march=$(MARCH) -fopenmp -fno-math-errno -g -Wall -Wextra $(WERROR) -MMD -MP $(SAN)
LDFLAGS  := -fopenmp $(SAN) -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -L$(HDF5_DIR) -L$(MPI_DIR)/lib
LDLIBS   := -lopenblas -lhdf5 -lmpi -lyaml -lopenjp2 -ljpeg -lz -lm -lpthread

LIB_SRCS  := $(wildcard engine/*.c nn/*.c data/*.c ssl/*.c distill/*.c bench/*.c)
CLI_SRCS  := $(wildcard cli/*.c)
TEST_SRCS := $(wildcard tests/*/test_*.c)
TESTLIB_SRCS := $(wildcard tests/common/*.c)
PERF_SRCS := $(wildcard bench/perf/*.c)

LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
CLI_OBJS  := $(CLI_SRCS:%.c=$(BUILD)/obj/%.o)
TESTLIB_OBJS := $(TESTLIB_SRCS:%.c=$(BUILD)/obj/%.o)
TEST_BINS := $(TEST_SRCS:%.c=$(BUILD)/%)
PERF_BINS := $(PERF_SRCS:%.c=$(BUILD)/%)

.PHONY: all deps deps-reference test asan bench demo clean fuzz
all: $(BUILD)/versa $(BUILD)/libversa.a

deps:
	@bash scripts/install-deps.sh

# `make bench` compares against PyTorch tuned fairly: Debian's torch and tcmalloc to preload
deps-reference:
	@bash scripts/install-deps.sh --with-reference

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libversa.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/versa: $(CLI_OBJS) $(BUILD)/libversa.a
	$(CC) $(LDFLAGS) $(CLI_OBJS) $(BUILD)/libversa.a $(LDLIBS) -o $@

$(BUILD)/libtestutil.a: $(TESTLIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/%: tests/%.c $(BUILD)/libtestutil.a $(BUILD)/libversa.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(BUILD)/libtestutil.a $(BUILD)/libversa.a $(LDFLAGS) $(LDLIBS) -lcmocka -o $@

$(BUILD)/bench/perf/%: bench/perf/%.c $(BUILD)/libversa.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(BUILD)/libversa.a $(LDFLAGS) $(LDLIBS) -o $@

# Parallel compile for the sub-makes below, unless the caller already chose with -j.
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
JOBFLAG   = $(if $(filter -j%,$(MAKEFLAGS)),,-j$(JOBS))

# The README's test command.  Builds everything, then runs every test program (the CLI test
# runs this build's versa, via VERSA_BIN).
test: deps
	@$(MAKE) --no-print-directory $(JOBFLAG) all $(TEST_BINS)
	@VERSA_BIN=$(BUILD)/versa bash scripts/run-tests.sh $(BUILD) $(TEST_BINS)

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer (run-tests.sh sets the
# sanitizer options when BUILD names an asan build).  ASAN_BUILD lets parallel work trees use
# their own folder.
ASAN_BUILD ?= build-asan
asan: deps
	@$(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

bench: deps-reference all $(PERF_BINS)
	@bash bench/run.sh $(BUILD)

demo: deps all
	@bash scripts/demo.sh $(BUILD) $(QUICK)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# Fuzzing (tests/fuzz, docs/robustness.md): one libFuzzer target per parser of outside input,
# built with clang + ASan + UBSan into FUZZ_BUILD (the library too, with coverage
# instrumentation; clang links libgomp, the OpenMP runtime OpenBLAS uses, and runs the library's
# parallel loops serially).  `make fuzz` runs every target for FUZZ_SECONDS (each with
# -rss_limit_mb=2048), `make fuzz-smoke` a few seconds each (CI).  Crash inputs land in
# FUZZ_BUILD/artifacts/<target>/; scripts/fuzz.sh has the rest (campaign, seeds, replay).
FUZZ_BUILD         ?= build-fuzz
FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 4
FUZZ_CFLAGS := -std=c11 -O1 -g -march=$(MARCH) -fopenmp=libgomp -fno-math-errno -Wall -Wextra -MMD -MP \
               -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
               -fsanitize=fuzzer-no-link
FUZZ_BINS   := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

.PHONY: fuzz-smoke fuzz-build
fuzz-build:
	@bash scripts/fuzz.sh deps
	@$(MAKE) --no-print-directory $(JOBFLAG) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) CFLAGS="$(FUZZ_CFLAGS)" \
	  $(FUZZ_BUILD)/libversa.a $(FUZZ_BINS)

$(FUZZ_BUILD)/fuzz/%: tests/fuzz/%.c $(wildcard tests/fuzz/*.h) $(FUZZ_BUILD)/libversa.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -Werror -DFUZZ_LIBFUZZER -fsanitize=fuzzer $< $(FUZZ_BUILD)/libversa.a \
	  -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -L$(HDF5_DIR) -L$(MPI_DIR)/lib $(LDLIBS) -o $@

fuzz: deps fuzz-build
	@bash scripts/fuzz.sh run $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-smoke: deps fuzz-build
	@bash scripts/fuzz.sh run $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
