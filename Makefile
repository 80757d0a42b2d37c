# Thin wrapper over CMake. The two commands the README promises:
#   make demo   install what is missing, build, run the demo
#   make test   install what is missing, build, run every test (then again under ASan+UBSan)
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: all build deps demo test test-fast sanitize bench format clean

all: build

deps:
	@sh scripts/install-deps.sh

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: deps build
	@sh scripts/demo.sh $(BUILD)

# Every test in the optimized build, then every test again under the sanitizers.
test: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DFR_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory sanitize

sanitize:
	@cmake -S . -B $(BUILD)-san -DCMAKE_BUILD_TYPE=Debug -DFR_WERROR=ON -DFR_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD)-san -j $(JOBS)
	@cd $(BUILD)-san && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -LE slow

test-fast: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD)-san
