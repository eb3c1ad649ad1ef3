# Tether: see README.md.
GO        ?= go
DATA_DIR  ?= ./data
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
COUNT     ?= 6

.PHONY: run build test test-long bench bench-rest bench-sessions soak soak-chaos soak-small fuzz lint vet generate clean

## run: the gateway with an embedded store in $(DATA_DIR) and the demo app
run:
	$(GO) run ./cmd/gateway --dev --data-dir $(DATA_DIR)

## build: the gateway and admin binaries in ./bin
build:
	$(GO) build -trimpath -o bin/ ./cmd/gateway ./cmd/admin

## test: every test, with the race detector
test:
	$(GO) vet ./...
	$(GO) test -race -short -count=1 -timeout 15m ./...

## test-long: every test including the long ones, without -short
test-long:
	$(GO) test -race -count=1 -timeout 30m ./...

## bench: micro and store benchmarks, $(COUNT) runs each (compare with benchstat)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(COUNT) ./storage ./queue ./gateway/...

## bench-rest: durable enqueue through the REST API over loopback: wrk as the client, then the Go benchmarks (docs/benchmarks.md)
bench-rest:
	scripts/bench-rest.sh 3 8
	$(GO) test -run '^$$' -bench 'BenchmarkREST' -benchtime 30000x -count 3 ./gateway

## bench-sessions: idle-session memory and login rate at 18,000 sessions, delivery latency, reconnect drain
bench-sessions:
	TETHER_BENCH_SESSIONS=18000 $(GO) test -run '^$$' -bench IdleSessions -benchtime 1x -timeout 20m ./gateway
	TETHER_BENCH_DEVICES=10000 $(GO) test -run '^$$' -bench 'DeliveryLatency|ReconnectDrain' -benchtime 1x -timeout 20m ./gateway

## soak: the full default soak (loadtest/README.md); SOAK_ARGS adds flags
soak:
	$(GO) run ./loadtest $(SOAK_ARGS)

## soak-chaos: the full soak with kill -9 of the gateway every minute
soak-chaos:
	$(GO) run ./loadtest -kill-every 60s $(SOAK_ARGS)

## soak-small: the small soak that make test also runs
soak-small:
	$(GO) test -count=1 -run TestSmallSoak -v ./loadtest

## fuzz: each fuzz target for $(FUZZTIME); new corpus entries land in the Go cache
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## lint: vet, gofmt and the import-direction rules
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) test -count=1 ./internal/lint

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
