# Gatehouse — common tasks. `make test` is what CI runs.
GO      ?= go
BIN     ?= bin/gatehouse
PKGS    ?= ./...
CONFIG  ?= examples/gatehouse.yaml

.PHONY: build helm-test test test-short vet run run-check validate bench e2e clean fuzz

build:
	$(GO) build -o $(BIN) ./cmd/gatehouse

vet:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

# The whole suite, race detector on. Tests that need Envoy or Docker skip
# with an explicit message.
test: vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(MAKE) helm-test
	@command -v envoy >/dev/null 2>&1 || echo "#### SKIP: no envoy binary here: Envoy-facing parts were proven on grpc-go's xDS client, raw ADS streams and Envoy's protos; run 'make e2e' where Docker runs ####"
	@docker info >/dev/null 2>&1 || echo "#### SKIP: no Docker engine here: the compose end-to-end suite (make e2e) did not run; its files were validated statically ####"

# The Helm chart: helm lint --strict, helm template with default and HA
# values, every document decoded strictly into its Kubernetes type, and
# cross-checks against the gatehouse binary. A separate Go module, so the
# root module does not carry Kubernetes' dependencies.
helm-test:
	cd deploy/helm/test && $(GO) test -count=1 ./...

test-short:
	$(GO) test -short -count=1 $(PKGS)

# Gatehouse, Dex and the demo services on this machine (Envoy too if it is
# on PATH), then a smoke check; Ctrl-C stops everything.
run:
	test/local/run.sh

run-check:
	test/local/run.sh --check

validate: build
	$(BIN) validate --config $(CONFIG)

# Side-by-side harness (test/bench): ext_authz vs a no-op server and
# opa-envoy-plugin, and an xDS fleet against `gatehouse xds`. Prints the
# tables with their targets and writes bench-results.json.
# BENCH_QUICK=1 runs a ~2 minute version; BENCH_FLAGS passes more flags
# (see go run ./test/bench/cmd/gatehouse-bench -h).
bench:
	$(GO) run ./test/bench/cmd/gatehouse-bench $(if $(BENCH_QUICK),-quick) $(BENCH_FLAGS)

e2e:
	@if ! docker info >/dev/null 2>&1; then \
	  echo "################################################################"; \
	  echo "# SKIP e2e: no Docker engine on this machine."; \
	  echo "# The compose e2e needs Docker; run 'make e2e' where Docker runs."; \
	  echo "################################################################"; \
	  exit 0; fi; \
	  dc="docker compose -f compose/docker-compose.yaml"; \
	  if ! $$dc up --build --wait --wait-timeout 300; then \
	    echo "e2e: the stack did not come up healthy"; $$dc logs --no-color --tail 200; $$dc down -v --remove-orphans; exit 1; fi; \
	  status=0; compose/scripts/all.sh || status=$$?; \
	  if [ $$status -ne 0 ]; then echo "e2e: FAILED, logs follow"; $$dc logs --no-color --tail 200; fi; \
	  $$dc down -v --remove-orphans; \
	  exit $$status

# Runs every fuzz target for FUZZTIME each (one -fuzz per go test call, as
# go test requires). Crashers are written to the package's testdata/fuzz
# and then replay as ordinary tests in `make test`. Minimisation is off by
# default (FUZZMINIMIZE=0): with a short FUZZTIME, go test reports "context
# deadline exceeded" as a failure when the deadline cuts a minimisation of
# a new-coverage input short. Set FUZZMINIMIZE=10s to get small crashers.
FUZZTIME ?= 5s
FUZZMINIMIZE ?= 0
FUZZ_TARGETS = \
	./extauthz/jwt:FuzzParseCompact \
	./extauthz/jwt:FuzzVerify \
	./extauthz/jwt:FuzzDecodeStrictObject \
	./extauthz/policy:FuzzBuildInput \
	./extauthz/identity:FuzzParsePeer \
	./extauthz/oidc:FuzzDecodeCookie \
	./internal/config:FuzzParse \
	./certs:FuzzInspect \
	./certs:FuzzLoadPair

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$fn in $$pkg for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg; \
	done

clean:
	rm -rf bin
