# The locker controller. `make help` lists the targets.

GO          ?= go
BIN         ?= bin
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
CMDS        := locker-sim lockerd lockerctl
LDFLAGS     := -s -w

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: sim
sim: ## run the simulator: web page and API on http://127.0.0.1:8080, broker on 127.0.0.1:1883, state in ./var
	$(GO) run ./cmd/locker-sim

.PHONY: build
build: ## build locker-sim, lockerd and lockerctl into bin/
	@mkdir -p $(BIN)
	$(foreach c,$(CMDS),$(GO) build -o $(BIN)/$(c) ./cmd/$(c) &&) true

.PHONY: test
test: ## run every test with -race (needs mosquitto: apt-get install mosquitto)
	$(GO) test -race -count=1 -timeout 15m ./...

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt wants to rewrite:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

.PHONY: cross
cross: ## CGO_ENABLED=0 builds of lockerd and lockerctl for linux/arm (GOARM 6 and 7) and linux/arm64
	@mkdir -p $(BIN)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/lockerd-linux-armv6 ./cmd/lockerd
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/lockerd-linux-armv7 ./cmd/lockerd
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/lockerd-linux-arm64 ./cmd/lockerd
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/lockerctl-linux-arm64 ./cmd/lockerctl
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/locker-sim-linux-armv7 ./cmd/locker-sim
	@ls -l $(BIN)/*-linux-*

.PHONY: bench
bench: ## run the benchmarks, each beside its baseline measured in the same run
	$(GO) test -run '^$$' -bench BenchmarkKeypadToCoil -benchtime 200x ./controller/

.PHONY: fuzz
fuzz: ## run each fuzz target for a short while (FUZZTIME, default 10s)
	@for t in FuzzParse:./hal/wiring FuzzParse:./simulator/scenario FuzzOpen:./sync/protocol FuzzDecodeGrants:./sync/protocol FuzzDecodeCommand:./sync/protocol; do \
		name=$${t%%:*}; pkg=$${t#*:}; \
		echo "fuzz $$name ($$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $${FUZZTIME:-10s} $$pkg || exit 1; \
	done

.PHONY: clean
clean: ## remove bin/ (the simulator's ./var is kept: it is the cabinet)
	rm -rf $(BIN)
