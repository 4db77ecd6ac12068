# Vigil's entry points. README.md promises two of them work on a fresh Debian
# machine with only Go and root: `make demo` and `make test`.

GO      ?= go
BIN     ?= bin/vigil
PKGS    ?= ./...
# Race-detected test run; fuzz seeds run as ordinary tests.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build demo test test-deps bench lint fuzz clean package screenshots

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/vigil

demo: build
	./$(BIN) demo

# The SPIRE integration is a module of its own (integrations/spire): its
# end-to-end test installs spire-server and spire-agent at the pinned
# release into the user cache (minutes the first time on a machine,
# seconds after; see README.md).
test: test-deps lint
	$(GO) test $(TESTFLAGS) $(PKGS)
	cd packaging && $(GO) test $(TESTFLAGS) ./...
	cd integrations/spire && $(GO) test $(TESTFLAGS) ./...

test-deps:
	@scripts/install-test-deps.sh

lint:
	$(GO) vet ./...
	cd packaging && $(GO) vet ./...
	cd integrations/spire && $(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Debian packages for amd64 and arm64 in dist/: the vigil binary, vigil(1),
# /etc/vigil/*.yaml as conffiles and hardened systemd units. The packager
# is a module of its own (packaging/) so nfpm stays out of the binary.
PKG_VERSION ?= 0.1.0~git$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
PKG_ARCH    ?= amd64,arm64
package:
	cd packaging && $(GO) run . -root .. -out ../dist -version '$(PKG_VERSION)' -arch '$(PKG_ARCH)'

# The dashboard's fleet and host pages, as headless Chromium shows them after
# a tamper: the screenshots in docs/img/ that docs/dashboard.md shows.
screenshots: test-deps
	VIGIL_SCREENSHOTS=$(CURDIR)/docs/img VIGIL_REQUIRE_BROWSER=1 $(GO) test -count=1 -run TestDashboardInABrowser ./cmd/vigil

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# Every parser's fuzz target, each for FUZZRUNS inputs. (A count, not a
# time: Go 1.26's fuzz coordinator can end a time-budgeted run with
# "context deadline exceeded" and no crasher.)
FUZZRUNS ?= 200000x
FUZZ_TARGETS = \
	./ima:FuzzParseASCII ./ima:FuzzParseBinary ./ima:FuzzParsePolicy \
	./ima:FuzzParseExcludeList ./ima:FuzzReadVerificationKey \
	./registrar:FuzzRegisterRequest ./registrar:FuzzDecodeRecord ./registrar/registrarapi:FuzzDecodeAKList ./verifier:FuzzEvidence \
	./verifier/evidence:FuzzQuote ./verifier/evidence:FuzzParseAK ./verifier/evidence:FuzzDecodeMatchesGoTPM \
	./verifier/bootlog:FuzzLog ./verifier/bootpolicy:FuzzParse ./verifier/bootpolicy:FuzzKeylimeRefState \
	./verifier/pcrpolicy:FuzzParse \
	./tpmsim/soft:FuzzParseState ./tpmsim/soft:FuzzActivateCredential ./tpmsim/soft:FuzzParseECCPoint \
	./tpmsim/simhost:FuzzDetectFormat ./tpmsim/simhost:FuzzIMAEntry ./tpmsim/simhost:FuzzBootLog \
	./internal/wire:FuzzEvidenceFastPath ./internal/wire:FuzzVerdictFastPath ./internal/wire:FuzzChallengeFastPath \
	./ima:FuzzStateBinary \
	./cmd/vigil/internal/bench:FuzzParseStatCPU ./cmd/vigil/internal/bench:FuzzParseStatusKB \
	./cmd/vigil/internal/bench:FuzzParseMetrics ./cmd/vigil/internal/bench:FuzzParseListenInodes \
	./verifier:FuzzNonce \
	./internal/dsse:FuzzParse ./internal/nodeproof:FuzzParse
# Fuzz targets of the SPIRE integration's module, run from inside it.
SPIRE_FUZZ_TARGETS = ./nodeattestor:FuzzParsePayload

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZRUNS) -fuzzminimizetime 3s $$pkg; \
	done
	@set -e; cd integrations/spire; for t in $(SPIRE_FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz integrations/spire/$$pkg $$name"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZRUNS) -fuzzminimizetime 3s $$pkg; \
	done

clean:
	rm -rf bin dist
