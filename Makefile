# airlock: `make demo` shows the whole product on local test hosts; `make test` runs
# every test. Both install what they need first (Debian/Ubuntu, as root).

CARGO ?= cargo
MUSL := x86_64-unknown-linux-musl
OUT := out

.PHONY: all deps build demo test lint fmt clean-testbeds fuzz load

all: build

deps:
	sh tests/scripts/deps.sh

# The static release binary that bundles are made from: musl when the target is
# installed, a static glibc build otherwise. Copied to out/airlock.
build: deps
	@mkdir -p $(OUT)
	@if rustup target list --installed 2>/dev/null | grep -q $(MUSL); then \
		$(CARGO) build --release --locked --target $(MUSL) && \
		cp target/$(MUSL)/release/airlock $(OUT)/airlock; \
	else \
		RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked \
			--target x86_64-unknown-linux-gnu && \
		cp target/x86_64-unknown-linux-gnu/release/airlock $(OUT)/airlock; \
	fi
	@echo "built $(OUT)/airlock"

demo: build
	bash tests/scripts/demo.sh $(OUT)/airlock

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test: deps lint
	bash tests/testbed/selftest.sh
	$(CARGO) test --locked

fmt:
	$(CARGO) fmt

clean-testbeds:
	sh tests/testbed/testbed.sh down --all

# Fuzz every target for FUZZ_SECONDS each (not part of `make test`; see docs/security.md).
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Leak detection
# is off: LeakSanitizer reports the TLS destructor record of every worker thread
# (`__cxa_thread_atexit_impl`) as a leak; runaway memory is caught by the limits instead.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := kubefile clusterfile bundle reference registry
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p tests/fuzz/corpus/$$t && \
		$(CARGO) +nightly fuzz run --fuzz-dir tests/fuzz -O $$t \
			tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
			-malloc_limit_mb=1024 -detect_leaks=0 || exit 1; \
	done

# Load: the registry under 64 pullers for DURATION seconds (default 300), then one
# install onto 64 testbed hosts (needs root). Not part of `make test`; results in
# docs/benchmarks.md.
load:
	$(CARGO) build --locked
	sh tests/load/registry.sh target/debug/airlock
	bash tests/load/install.sh target/debug/airlock
