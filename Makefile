# The locker controller. `make help` lists the targets.

GO          ?= go
BIN         ?= bin
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
CMDS        := locker-sim lockerd lockerctl
VERSION     ?= 0.1.0+git$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -s -w -X github.com/openlocker/locker/cmd/internal/daemon.Version=$(VERSION)
DEB_ARCHS   := arm64 armhf

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

# The programs the tests run for real, as Debian packages (command:package).
TEST_DEPS := mosquitto:mosquitto chromium:chromium firefox-esr:firefox-esr
# Debian installs mosquitto in /usr/sbin, which a user's PATH may lack (the
# test of this target, cmd/internal/makedeps, points it elsewhere).
DEPS_SBIN ?= /usr/sbin

.PHONY: deps
deps: ## install what the tests need (Mosquitto, Chromium, Firefox ESR) through apt when run as root; else say the one command to run
	@missing=""; for d in $(TEST_DEPS); do 		c=$${d%%:*}; p=$${d#*:}; 		command -v $$c >/dev/null 2>&1 || [ -x $(DEPS_SBIN)/$$c ] || missing="$$missing $$p"; 	done; 	if [ -z "$$missing" ]; then exit 0; fi; 	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then 		echo "installing$$missing"; 		DEBIAN_FRONTEND=noninteractive apt-get update -qq && 		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; 		if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto 2>/dev/null || true; fi; 	else 		echo "the tests need$$missing; install them with:"; 		echo "  sudo apt-get install -y$$missing"; exit 1; 	fi

.PHONY: test
# The adversarial model test at 2,000 sequences (without -race: the -race run
# of ./... runs it at its default size) runs beside the -race run: that one
# spends most of its time waiting on real processes, brokers and time-outs,
# so the model's CPU fits in its gaps. Its output is printed when both ended.
# Three test binaries at once (-p 3): cmd/locker-sim, controller and
# simulator/scenario wait more than they compute. The model's four workers
# (-parallel 4) keep 2 cores busy while each waits on its controller.
#
# -race implies the compiler's pointer checks (-d=checkptr) in every package;
# in SQLite's C translated to Go (modernc.org/...) they were a third of the
# CPU of every test that touches the store, checking that library's pointer
# arithmetic, not ours. RACE_GCFLAGS keeps them for our code and the race
# detector for all code; the race-built locker-sim that cmd/locker-sim's tests
# run is built so too.
# The model test's databases go to /dev/shm where there is one: it checks the
# controller's logic over thousands of power cuts simulated in the process,
# not the disk, and on the disk its fsyncs (synchronous=FULL) made it the
# longest half of make test. The crash and storage tests keep their files on
# the disk.
# The packages that run longest are named first, so that they start first.
RACE_GCFLAGS := modernc.org/...=-d=checkptr=0
LONG_PKGS    := ./cmd/locker-sim ./controller ./simulator/scenario ./controller/store ./simulator/api
test: deps ## run every test with -race, and beside it the adversarial model test at 2,000 sequences (installs Mosquitto, Chromium and Firefox ESR first when root)
	@model=$$(mktemp); \
	shm=$${TMPDIR:-/tmp}; [ -d /dev/shm ] && [ -w /dev/shm ] && shm=/dev/shm; \
	TMPDIR=$$shm LOCKER_MODEL_SEQS=2000 $(GO) test -count=1 -parallel 4 -timeout 10m -run '^TestModel$$' ./controller/ >$$model 2>&1 & pid=$$!; \
	PATH="$$PATH:/usr/sbin" $(GO) test -race -gcflags='$(RACE_GCFLAGS)' -count=1 -p 3 -parallel 6 -timeout 15m $(LONG_PKGS) ./...; rc=$$?; \
	wait $$pid; mrc=$$?; echo "== the model test at 2,000 sequences:"; cat $$model; rm -f $$model; \
	[ $$rc = 0 ] && [ $$mrc = 0 ]

# The tests of controller/..., hal/... (the wiring parser included) and sync/protocol, built
# with CGO_ENABLED=0 for linux/arm (GOARM=6: the oldest Raspberry Pi boards) and linux/arm64,
# and run under qemu-user (Debian's qemu-user-static; go test -exec runs the emulator, binfmt
# is not needed). Every test of those packages runs; the adversarial model test runs 20
# sequences (LOCKER_MODEL_SEQS=20; make test runs 2,000 natively). About 2 min for arm and
# 1 min for arm64 on 2 cores.
ARM_PKGS := ./controller/... ./hal/... ./sync/protocol
# Tests that assert wall-clock bounds of a few milliseconds (a coil's
# energised time, a poll period, an unlock's wait): under emulation the code
# runs 5 to 20 times slower, so they would measure qemu. They run natively
# in make test; everything else runs here.
ARM_SKIP := ^(TestSolenoidOffRetried|TestSolenoidOffDeadPin|TestSolenoidExpanderOffRetried|TestReleaseQueue|TestPollPeriod|TestUnlockPriority)$$
.PHONY: test-arm
test-arm: ## run the controller, hal and protocol tests for linux/arm (GOARM=6) and linux/arm64 under qemu-user (needs qemu-user-static)
	@command -v qemu-arm-static >/dev/null && command -v qemu-aarch64-static >/dev/null || \
		{ echo "make test-arm needs qemu-user-static: apt-get install qemu-user-static"; exit 1; }
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 LOCKER_MODEL_SEQS=20 $(GO) test -count=1 -timeout 15m -skip '$(ARM_SKIP)' -exec qemu-arm-static $(ARM_PKGS)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 LOCKER_MODEL_SEQS=20 $(GO) test -count=1 -timeout 15m -skip '$(ARM_SKIP)' -exec qemu-aarch64-static $(ARM_PKGS)

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
bench: ## run the benchmarks and print one table: each figure beside its baseline measured in the same run, the ratio and the target; the soak, the fleet (FLEET_N lockers, needs mosquitto) and one table of years, wear and fleet side by side
	$(GO) run ./cmd/internal/benchtable $(BENCHFLAGS) -fleet $(FLEET_N) -fleet-traffic $(FLEET_TRAFFIC) -fleet-idle $(FLEET_IDLE)

# The fleet benchmark: FLEET_N simulated lockers (the real daemon on simulated cabinets) against
# a Mosquitto of their own on 127.0.0.1, every locker connected and trading parcels for
# FLEET_TRAFFIC, then idle CPU over FLEET_IDLE, then a broker restart and the reconnect curve.
# locker-sim raises its open-file limit (and Mosquitto's, which it starts); where one process
# may not hold 4 files per locker it runs the lockers in several processes (-fleet-first ranges).
# The databases go to /dev/shm (tmpfs) where there is one: creating 10,000 databases with
# synchronous=FULL takes about 5 min of fsyncs on a shared disk, and the fleet measures what the
# lockers cost the broker and the process, not the disk (the wear and keypad-to-coil rows of
# make bench do). RSS does not count the databases in tmpfs (about 100 KB per locker).
FLEET_N       ?= 10000
FLEET_TRAFFIC ?= 60s
FLEET_IDLE    ?= 30s
.PHONY: fleet
fleet: ## run 10,000 simulated lockers (FLEET_N) against a Mosquitto of their own: RSS per locker, idle CPU, reconnect curve after a broker restart (minutes; needs mosquitto)
	@d=$$(mktemp -d /dev/shm/locker-fleet.XXXXXX 2>/dev/null || mktemp -d /tmp/locker-fleet.XXXXXX) && \
		$(GO) run ./cmd/locker-sim -fleet $(FLEET_N) -fleet-mosquitto mosquitto -fleet-bench $(FLEET_TRAFFIC) \
			-fleet-idle $(FLEET_IDLE) -fleet-report 0 -data $$d; rc=$$?; rm -rf $$d; exit $$rc

.PHONY: torture
torture: ## run the torture tests at their torture size (minutes; TORTUREFLAGS=-long for more) and print what was tried and lost (needs mosquitto)
	$(GO) run ./cmd/internal/torturetable $(TORTUREFLAGS)

.PHONY: fuzz
# Each target runs for a number of executions (about 5 s each here), not for a
# duration: with a duration, Go 1.26's coordinator can fail a target at the
# deadline with "context deadline exceeded" and no failing input (Go issue 75804).
# FUZZTIME=30s (or =100000x) overrides the budget for every target.
FUZZ_TARGETS = FuzzParse:./hal/wiring:30000 FuzzST7920Layout:./hal:60000 FuzzParse:./simulator/scenario:20000 \
	FuzzOpen:./sync/protocol:25000 FuzzDecodeGrants:./sync/protocol:80000 FuzzDecodeCommand:./sync/protocol:80000 \
	FuzzLoadConfig:./cmd/internal/daemon:1000 FuzzKeypad:./controller:3000 FuzzKeypadScan:./hal:30000 \
	FuzzKerongDecode:./hal/rs485/proto:30000 Fuzz8A80Decode:./hal/rs485/proto:30000
fuzz: ## run each fuzz target briefly (a fixed number of executions; FUZZTIME overrides)
	@for t in $(FUZZ_TARGETS); do \
		name=$${t%%:*}; rest=$${t#*:}; pkg=$${rest%%:*}; n=$${rest#*:}; \
		budget=$${FUZZTIME:-$${n}x}; \
		echo "fuzz $$name ($$pkg, $$budget)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $$budget -fuzzminimizetime 2s $$pkg || exit 1; \
	done

.PHONY: deb
deb: ## build lockerd .deb packages for arm64 and armhf into dist/ and check their contents
	@set -e; for arch in $(DEB_ARCHS); do \
		case $$arch in arm64) goarch=arm64; goarm=;; armhf) goarch=arm; goarm=7;; esac; \
		root=dist/root-$$arch; rm -rf $$root; \
		mkdir -p $$root/DEBIAN $$root/usr/bin $$root/lib/systemd/system $$root/etc/lockerd \
			$$root/usr/share/doc/lockerd $$root/var/lib/lockerd; \
		for c in lockerd lockerctl; do \
			CGO_ENABLED=0 GOOS=linux GOARCH=$$goarch GOARM=$$goarm $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
				-o $$root/usr/bin/$$c ./cmd/$$c; \
		done; \
		install -m 0644 cmd/lockerd/dist/lockerd.service $$root/lib/systemd/system/lockerd.service; \
		install -m 0640 cmd/lockerd/dist/config.yaml $$root/etc/lockerd/config.yaml; \
		install -m 0644 hal/wiring/testdata/rpi-4.yaml $$root/etc/lockerd/wiring.yaml; \
		install -m 0755 cmd/lockerd/dist/postinst cmd/lockerd/dist/prerm $$root/DEBIAN/; \
		install -m 0644 README.md docs/*.md $$root/usr/share/doc/lockerd/; \
		printf '/etc/lockerd/config.yaml\n/etc/lockerd/wiring.yaml\n' > $$root/DEBIAN/conffiles; \
		printf 'Package: lockerd\nVersion: $(VERSION)\nArchitecture: %s\nMaintainer: Parcel locker controller maintainers <lockerd@localhost>\nDepends: adduser\nSection: misc\nPriority: optional\nDescription: parcel-locker controller daemon\n Drives the door solenoids and sensors of a parcel locker through GPIO,\n serves its keypad, keeps state in SQLite and syncs with the central\n server over MQTT.\n' $$arch > $$root/DEBIAN/control; \
		dpkg-deb --root-owner-group -Zxz --build $$root dist/lockerd_$(VERSION)_$$arch.deb >/dev/null; \
		rm -rf $$root; \
		dpkg-deb -c dist/lockerd_$(VERSION)_$$arch.deb > dist/contents-$$arch.txt; \
		for f in ./usr/bin/lockerd ./usr/bin/lockerctl ./lib/systemd/system/lockerd.service \
			./etc/lockerd/config.yaml ./etc/lockerd/wiring.yaml ./var/lib/lockerd/ ./usr/share/doc/lockerd/README.md; do \
			grep -q " $$f$$" dist/contents-$$arch.txt || { echo "deb $$arch lacks $$f"; exit 1; }; \
		done; \
		test "$$(dpkg-deb -f dist/lockerd_$(VERSION)_$$arch.deb Architecture)" = $$arch; \
		echo "dist/lockerd_$(VERSION)_$$arch.deb: contents checked"; \
	done
	@if command -v systemd-analyze >/dev/null 2>&1; then \
		mkdir -p $(BIN) && $(GO) build -o $(BIN)/lockerd ./cmd/lockerd && \
		sed 's#/usr/bin/lockerd#$(CURDIR)/$(BIN)/lockerd#g' cmd/lockerd/dist/lockerd.service > dist/lockerd.service && \
		out=$$(systemd-analyze verify dist/lockerd.service 2>&1); rm -f dist/lockerd.service; \
		if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; echo "lockerd.service: systemd-analyze verify is clean"; \
	else echo "systemd-analyze is not on this machine: the unit was not verified"; fi

.PHONY: clean
clean: ## remove bin/ (the simulator's ./var is kept: it is the cabinet)
	rm -rf $(BIN) dist
