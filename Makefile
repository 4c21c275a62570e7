# A thin wrapper over CMake: `make`, `make demo`, `make check`, `make bench`.
BUILD := build
JOBS := $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS := -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all setup build demo check bench fuzz soak clean

all: build

setup:
	@QUIVER_BUILD_DIR=$(abspath $(BUILD)) scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) > $(BUILD)/cmake.log || (cat $(BUILD)/cmake.log; exit 1)
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory -s

demo: build
	@. $(BUILD)/env.sh && scripts/demo.sh

check: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	@. $(BUILD)/env.sh && scripts/bench.sh

# Every fuzzer to FUZZ_RUNS executions, one after another (`make check`
# fuzzes each for seconds); prints executions, exec/s and time per fuzzer.
FUZZ_RUNS ?= 10000000
fuzz: build
	@. $(BUILD)/env.sh && scripts/fuzz.sh --runs $(FUZZ_RUNS)

# The long forms of the fault tests: 1M-call leak soaks, 100 kill rounds,
# 1M differential examples (the short forms run in `make check`).
soak: build
	@. $(BUILD)/env.sh && scripts/soak.sh

clean:
	rm -rf $(BUILD)
