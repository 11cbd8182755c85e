# streamscore: `make demo` runs the embedded default, `make test` runs every test.
# Both install what a fresh machine lacks first (scripts/setup, idempotent).

ARGS ?=
CARGO ?= cargo
export ORT_DYLIB_PATH ?= $(CURDIR)/.local/onnxruntime/lib/libonnxruntime.so

.PHONY: setup build demo test lint bench clean

setup:
	@scripts/setup

build: setup
	$(CARGO) build --release --locked --workspace

# A real Kafka broker on 127.0.0.1, the processor, a synthetic encrypted
# producer, a live line per second, and an exactly-once check at the end.
demo: build
	@scripts/kafka run demo -- target/release/streamscore-tools demo $(ARGS)

# The end-to-end benchmark on a fresh local broker (release build): ceilings,
# maximum throughput, latency sweep; report and plot in target/bench.
bench: build
	@scripts/kafka run bench -- target/release/streamscore-tools bench $(ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Lint, then build every target once and run unit, integration, CLI and
# bench-smoke tests against one real broker started for the run.
test: setup lint
	$(CARGO) build --locked --workspace --all-targets
	$(CARGO) bench --locked --workspace --no-run
	@scripts/kafka run test -- $(CARGO) test --locked --workspace --all-targets

clean:
	$(CARGO) clean
	rm -rf .local/kafka-run
