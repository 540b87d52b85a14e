# Front door of the event store. `make run` and `make test` work on a fresh
# Debian 12 machine: they install what is missing first (tools/setup.sh).
BAZEL ?= bazel
BAZEL_FLAGS ?=
BIND_ADDR ?= 127.0.0.1:50051
export BIND_ADDR

.PHONY: help setup build run test test-plain test-asan test-tsan bench smoke fmt clean

help:
	@echo "make run     start the server (BACKEND=memory, BIND_ADDR=$(BIND_ADDR))"
	@echo "make test    build and run every test, then the suite under ASan+UBSan and TSan"
	@echo "make bench   run the benchmarks against a fresh server"
	@echo "make smoke   call a running server with a stock client (grpcurl)"
	@echo "make fmt     check formatting with clang-format"

setup:
	@tools/setup.sh
	@for f in sdks/*/setup.sh; do "$$f" || exit 1; done

build: setup
	$(BAZEL) build $(BAZEL_FLAGS) //...

run: setup
	$(BAZEL) run $(BAZEL_FLAGS) -c opt //server:eventstore -- $(ARGS)

test: setup test-plain test-asan test-tsan

test-plain:
	$(BAZEL) test $(BAZEL_FLAGS) //...

# The SDK suites test client code in other languages; they run once, above.
test-asan:
	$(BAZEL) test $(BAZEL_FLAGS) --config=asan -- //... -//sdks/...

# TSan covers the code that does not go through the uninstrumented gRPC library.
TSAN_TARGETS = //core/... //backend_memory/... //tests/conformance/...
test-tsan:
	$(BAZEL) test $(BAZEL_FLAGS) --config=tsan $(TSAN_TARGETS)

bench: setup
	bench/run.sh

smoke: setup
	tools/smoke.sh $(BIND_ADDR)

fmt:
	tools/fmt.sh --check

clean:
	$(BAZEL) clean
