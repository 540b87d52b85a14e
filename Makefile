# Front door of the event store. `make run` and `make test` work on a fresh
# Debian 12 machine: they install what is missing first (tools/setup.sh).
BAZEL ?= bazel
BAZEL_FLAGS ?=
BIND_ADDR ?= 127.0.0.1:50051
export BIND_ADDR

.PHONY: help setup setup-system build run test test-plain test-asan test-tsan test-fuzz bench smoke fmt \
	fuzz docs-build docs-serve soak nix-check lint coverage qa clean sdk-dist

help:
	@echo "make run     start the server (durable in ./data; BACKEND=memory or postgres, ES_DATA_DIR, BIND_ADDR=$(BIND_ADDR))"
	@echo "make test    build and run every test, then the suite under ASan+UBSan and TSan"
	@echo "make bench   run the benchmarks against a fresh server"
	@echo "make smoke   call a running server with a stock client (grpcurl)"
	@echo "make fmt     check formatting with clang-format"
	@echo "make fuzz    run every libFuzzer target (FUZZ_SECONDS each, default 60)"
	@echo "make docs-build / docs-serve   build or serve the documentation site"
	@echo "make soak    a bounded mixed-load run with subscriber churn (SOAK_SECONDS)"
	@echo "make lint    clang-tidy and cppcheck on core/, backend_*/, server/"
	@echo "make coverage  line coverage (gcovr), HTML in coverage/index.html"
	@echo "make qa      fmt, lint, coverage >= COVERAGE_MIN (default 90)"
	@echo "make sdk-dist  the SDK packages (.tgz, .whl + sdist, .crate) in dist/"

# System packages only: enough to build and run the server.
setup-system:
	@tools/setup.sh

# Everything the whole build needs, SDK toolchains' dependencies included.
setup: setup-system
	@for f in sdks/*/setup.sh; do "$$f" || exit 1; done

build: setup
	$(BAZEL) build $(BAZEL_FLAGS) //...

run: setup-system
	$(BAZEL) run $(BAZEL_FLAGS) -c opt //server:eventstore -- $(ARGS)

test: setup fmt lint test-plain sdk-dist test-asan test-tsan test-fuzz nix-check docs-build

test-plain:
	$(BAZEL) test $(BAZEL_FLAGS) //...

# The SDK packages in dist/, as the consumer tests of test-plain installed them.
sdk-dist: setup
	BAZEL=$(BAZEL) BAZEL_FLAGS="$(BAZEL_FLAGS)" tools/sdk_dist.sh

# The SDK suites test client code in other languages; they run once, above.
test-asan:
	$(BAZEL) test $(BAZEL_FLAGS) --config=asan -- //... -//sdks/...

# TSan covers the code that does not go through the uninstrumented gRPC library:
# the core (notifier, subscriptions, append decisions), each backend's own tests
# (the PostgreSQL ones against a throwaway real PostgreSQL: committer, listener,
# connection pool, timeouts; libpq itself is not instrumented) and the
# conformance suite, which runs on every backend (liblmdb, like libpq, is not
# instrumented); and the live window
# (server/tail.c: filler, eviction, readers moving to storage), whose frees
# its own atomic counter decides. The rest of the server and the end-to-end
# tests (//server, //tests/e2e, //tests/pg, ...) run under ASan+UBSan only.
TSAN_TARGETS = //core/... //backend_memory/... //backend_postgres/... //backend_lmdb/... \
	//tests/conformance/... \
	//server/tests:tail_test
test-tsan:
	$(BAZEL) test $(BAZEL_FLAGS) --config=tsan $(TSAN_TARGETS)

# A short run of every fuzzer; `make fuzz` runs them longer.
test-fuzz:
	fuzz/run.sh 10

FUZZ_SECONDS ?= 60
fuzz: setup-system
	fuzz/run.sh $(FUZZ_SECONDS)

docs-build:
	tools/docs.sh build

docs-serve:
	tools/docs.sh serve

soak: setup-system
	tools/soak.sh

nix-check:
	tools/nix_check.sh

bench: setup-system
	bench/run.sh
	bench/run_pg.sh

smoke: setup-system
	tools/smoke.sh $(BIND_ADDR)

fmt:
	tools/fmt.sh --check

COVERAGE_MIN ?= 90
export COVERAGE_MIN

lint: setup
	tools/lint.sh

coverage: setup
	tools/coverage.sh

qa: setup
	tools/qa.sh

clean:
	$(BAZEL) clean
