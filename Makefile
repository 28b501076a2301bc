# airlock: `make demo` shows the whole product on local test hosts; `make test` runs
# every test. Both install what they need first (Debian/Ubuntu, as root).

CARGO ?= cargo
MUSL := x86_64-unknown-linux-musl
OUT := out

.PHONY: all deps build demo test lint fmt clean-testbeds

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
