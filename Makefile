# Vigil's entry points. README.md promises two of them work on a fresh Debian
# machine with only Go and root: `make demo` and `make test`.

GO      ?= go
BIN     ?= bin/vigil
PKGS    ?= ./...
# Race-detected test run; fuzz seeds run as ordinary tests.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build demo test test-deps bench lint fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/vigil

demo: build
	./$(BIN) demo

test: test-deps lint
	$(GO) test $(TESTFLAGS) $(PKGS)

test-deps:
	@scripts/install-test-deps.sh

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	rm -rf bin
