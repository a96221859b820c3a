# spawngate: `make demo` runs the main story end to end, `make test` runs every test.
# Both install missing system packages first (apt-get where present; otherwise they say what to install).

SWIFT ?= swift
BIN := .build/debug/spawngate

.PHONY: all build test demo release bench fuzz deps relay py clean

all: build

# What the build and the tests need from the system:
#   libsodium-dev   all cryptography (Ed25519, SHA-256, BLAKE2b)
#   libsqlite3-dev  the state store (GRDB links the system SQLite)
#   libseccomp-dev  the seccomp filter of the standard and strict sandbox profiles
#   bubblewrap      the namespaces of the strict profile
#   pkg-config      how SwiftPM finds libsodium
#   openssh-client  ssh-keygen, which the tests use to cross-check fingerprints and key files
#   python3 + cryptography  the independent wire-format implementation the interop tests run
APT_PACKAGES := libsodium-dev libsqlite3-dev libseccomp-dev bubblewrap pkg-config openssh-client python3

deps:
	@bash scripts/install-deps.sh $(APT_PACKAGES)

# The real Agent Relay brokers (v6.0.0 and v14.0.0, unpacked from the agent-relay-sdk wheels on PyPI) for the
# interop tests in Tests/SpawnGateTests/Interop/RealRelayTests.swift; nothing is installed outside .build-relay/.
relay:
	@bash scripts/install-relay.sh

# The reference MCP client (PyPI mcp) in a venv under .build-py/, for the tests that drive `spawngate mcp`.
py:
	@bash scripts/install-py.sh

build: deps
	$(SWIFT) build

test: deps relay py
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --disable-xctest

demo: deps
	$(SWIFT) build --product spawngate
	$(SWIFT) build --product spawngate-serve
	$(SWIFT) build --product spawngate-mcp
	@bash scripts/install-relay.sh || echo "demo: the Agent Relay step will be skipped (the broker could not be installed)"
	@bash scripts/demo.sh $(BIN)

# Release binaries with the Swift runtime and Foundation linked in: a fresh `spawngate` process (every hook call,
# every `spawn`) starts in about half the time. `make release` leaves them in .build-static/release/.
RELEASE := $(SWIFT) build -c release --static-swift-stdlib --scratch-path .build-static

release: deps
	$(RELEASE) --product spawngate
	$(RELEASE) --product spawngate-serve
	$(RELEASE) --product spawngate-mcp

# The SSH comparison runs a private sshd on 127.0.0.1 (openssh-server; the system's sshd is never started).
bench: release
	@bash scripts/install-deps.sh openssh-server
	$(RELEASE) --product spawngate-bench
	.build-static/release/spawngate-bench bench/results.md .build-static/release/spawngate

# libFuzzer targets (Fuzz/), built with --sanitize fuzzer,address in .build-fuzz; FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz: deps
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf .build .build-fuzz .build-static .build-relay .build-py
