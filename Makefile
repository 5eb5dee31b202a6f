# nvgred: `make test` and `make lab` set up what they need on a fresh Debian 12
# machine (as root): apt packages, npm ci, cargo build, tsc.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
export DEBIAN_FRONTEND := noninteractive

APT_PACKAGES := iproute2 iputils-ping tshark iperf3 libpcap-dev python3 make g++ ethtool systemd
CARGO := cargo
ADDON := native/build/nvgred.node
NATIVE_SRC := $(shell find native/src -name '*.rs') native/Cargo.toml
TS_SRC := $(shell find src lab -name '*.ts' 2>/dev/null) native/index.d.ts tsconfig.json

.PHONY: all deps native build test test-native test-js lab clean

all: build

# Debian packages, installed only when one is missing.
.deps-apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust >= 1.77 (rustup) or Debian's cargo"; exit 1; }
	@touch $@

node_modules/.installed: package.json package-lock.json | .deps-apt
	npm ci --no-audit --no-fund
	@touch $@

deps: .deps-apt node_modules/.installed

$(ADDON): $(NATIVE_SRC) | .deps-apt
	cd native && $(CARGO) build --release
	@mkdir -p native/build
	cp native/target/release/libnvgred_native.so $(ADDON)

native: $(ADDON)

dist/.built: $(TS_SRC) node_modules/.installed
	npx tsc -p tsconfig.json
	@touch $@

build: $(ADDON) dist/.built

test-native: .deps-apt
	cd native && $(CARGO) test --release

test-js: build
	npx vitest run

test: test-native test-js

lab: build
	node dist/lab/run.js

clean:
	rm -rf dist native/build native/target .deps-apt node_modules/.installed
