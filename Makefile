# nvgred: `make test` and `make lab` set up what they need on a fresh Debian 12
# machine (as root): apt packages, npm ci, cargo build, tsc.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
export DEBIAN_FRONTEND := noninteractive

# etcd-server/etcd-client: Debian 12's etcd 3.4, for the fleet's tests, lab and benchmark (their own members).
APT_PACKAGES := iproute2 iputils-ping tshark iperf3 sockperf libpcap-dev python3 make g++ ethtool systemd util-linux curl etcd-server etcd-client
# Rust: the cargo on PATH (rustup's ~/.cargo/bin included) when it is at least
# the crate's rust-version; otherwise Debian 12's cargo-web and rustc-web
# (its rustc is 1.63, too old), installed with the packages below. These are
# /usr/bin/cargo, rustc and rustdoc; RUSTC and RUSTDOC keep an older toolchain
# earlier on PATH out. ($(shell) does not see the exported PATH: it is given.)
RUST_MIN := $(shell sed -n 's/^rust-version = "\(.*\)"$$/\1/p' native/Cargo.toml)
RUST_FOUND := $(shell PATH='$(PATH)' cargo --version 2>/dev/null | cut -d' ' -f2)
ifeq ($(shell [ -n "$(RUST_FOUND)" ] && printf '%s\n' $(RUST_MIN) $(RUST_FOUND) | sort -V -C && echo ok),ok)
CARGO := cargo
else
APT_PACKAGES += cargo-web rustc-web
CARGO := RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc /usr/bin/cargo
endif
ADDON := native/build/nvgred.node
NATIVE_SRC := $(shell find native/src -name '*.rs') native/Cargo.toml
TS_SRC := $(shell find src lab bench -name '*.ts' 2>/dev/null) native/index.d.ts tsconfig.json

.PHONY: all deps native build test test-native test-js test-fuzz fuzz fuzz-repro fuzz-seed lab bench bench-memory bench-fleet bench-policy soak install uninstall clean

PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
LIBDIR := $(PREFIX)/lib/nvgred
BINDIR := $(PREFIX)/bin
UNITDIR := $(PREFIX)/lib/systemd/system
SYSUSERSDIR := $(PREFIX)/lib/sysusers.d
DOCDIR := $(PREFIX)/share/doc/nvgred
DATADIR := $(PREFIX)/share/nvgred

all: build

# Debian packages, installed only when one is missing. A policy-rc.d (if there is
# none) keeps the packages from starting their services: etcd-server would start a
# system etcd; tests and the lab run their own members.
.deps-apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	  rcd=; if [ ! -e /usr/sbin/policy-rc.d ]; then rcd=1; printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; st=$$?; \
	  if [ -n "$$rcd" ]; then rm -f /usr/sbin/policy-rc.d; fi; [ $$st = 0 ]; \
	fi
	@$(CARGO) --version
	@touch $@

node_modules/.installed: package.json package-lock.json | .deps-apt
	npm ci --no-audit --no-fund
	@touch $@

deps: .deps-apt node_modules/.installed

$(ADDON): $(NATIVE_SRC) | .deps-apt
	cd native && $(CARGO) build --release
	@mkdir -p native/build
	@# A new inode: running daemons keep the library they mapped.
	cp native/target/release/libnvgred_native.so $(ADDON).tmp && mv $(ADDON).tmp $(ADDON)

native: $(ADDON)

dist/.built: $(TS_SRC) node_modules/.installed
	npx tsc -p tsconfig.json
	@touch $@

build: $(ADDON) dist/.built

# The dev profile: debug assertions and overflow checks on.
test-native: .deps-apt
	cd native && $(CARGO) test

# vitest only strips types: the tests are type-checked here first.
test-js: build
	npx tsc -p tsconfig.test.json
	npx vitest run

test: test-native test-js test-fuzz

# Coverage-guided fuzzing of the packet core (native/fuzz/README.md), with
# Debian's libFuzzer (and the clang it depends on), installed only for this.
FUZZ_SECONDS ?= 60
FUZZ_SHORT_SECONDS ?= 24
.deps-fuzz: | .deps-apt
	@dpkg -s libfuzzer-14-dev >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q --no-install-recommends libfuzzer-14-dev; }
	@touch $@

# Every target for FUZZ_SECONDS (or FUZZ_TARGETS only); the executions of each and in all.
fuzz: .deps-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) native/fuzz/fuzz.sh run $(FUZZ_TARGETS)

# What `make test` runs: the committed crash inputs replayed, then a short fuzz over the committed corpus.
test-fuzz: .deps-fuzz
	native/fuzz/fuzz.sh short $(FUZZ_SHORT_SECONDS)

# Replay inputs: make fuzz-repro FUZZ_TARGET=vm_frames FUZZ_INPUT=native/fuzz/artifacts/vm_frames/crash-...
fuzz-repro: .deps-fuzz
	native/fuzz/fuzz.sh repro $(FUZZ_TARGET) $(abspath $(FUZZ_INPUT))

# Rewrite the seed corpus from the core's test frames, and from a capture: make fuzz-seed PCAP=lab/out/underlay.pcap
fuzz-seed:
	native/fuzz/fuzz.sh seed $(if $(PCAP),$(abspath $(PCAP)))

# LAB_ARGS: e.g. --no-qemu, or --prefix nvx- for a run beside another (lab/README.md).
lab: build
	node dist/lab/run.js $(LAB_ARGS)

# Side-by-side benchmark (a few minutes): veth, kernel VXLAN, nvgred; then two QEMU guests
# (TCG) on a bridge + kernel VXLAN, on nvgred through vhost-user and through attach; then the
# core's microbenchmark.
bench: build
	node dist/bench/run.js
	node dist/bench/vms.js
	cd native && $(CARGO) bench --bench core

# Resident memory idle, with 1,000,000 lookup records, and over 5 minutes of traffic.
bench-memory: build
	node dist/bench/memory.js

# The reference lab under traffic, malformed frames, API churn, reloads,
# adapters and learning for SOAK_SECONDS (default 600): fails on a broken
# transfer, a 5xx, a daemon that died, RSS drift or descriptors that grew.
soak: build
	node dist/bench/soak.js

# The fleet's policy in etcd: 1,000,000 records, several daemons (BENCH_RECORDS, BENCH_HOSTS,
# BENCH_CHANGES, BENCH_MIGRATIONS): sync from empty, commit→applied on every host, migrations, RSS.
bench-fleet: build
	node dist/bench/fleet.js

# One record's change, reload, learning, with 1,000,000 lookup records (BENCH_RECORDS, BENCH_OPS).
bench-policy: build
	node dist/bench/policy.js

# Install the daemon, the CLI, the unit and an example config. DESTDIR and
# PREFIX are respected; an existing config is never overwritten.
install: build
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	  $(DESTDIR)$(DOCDIR) $(DESTDIR)$(DATADIR) $(DESTDIR)$(SYSCONFDIR)/nvgred
	rm -rf $(DESTDIR)$(LIBDIR)/dist $(DESTDIR)$(LIBDIR)/node_modules
	cp -r dist package.json package-lock.json $(DESTDIR)$(LIBDIR)/
	install -D -m 0755 $(ADDON) $(DESTDIR)$(LIBDIR)/$(ADDON)
	cp -r node_modules $(DESTDIR)$(LIBDIR)/
	cd $(DESTDIR)$(LIBDIR) && npm prune --omit=dev --no-audit --no-fund >/dev/null && find node_modules -mindepth 1 -maxdepth 1 -type d -empty -delete
	chmod 0755 $(DESTDIR)$(LIBDIR)/dist/src/daemon/main.js $(DESTDIR)$(LIBDIR)/dist/src/cli/main.js
	ln -sfn ../lib/nvgred/dist/src/daemon/main.js $(DESTDIR)$(BINDIR)/nvgred
	ln -sfn ../lib/nvgred/dist/src/cli/main.js $(DESTDIR)$(BINDIR)/nvgrectl
	sed 's|@BINDIR@|$(BINDIR)|g; s|@DOCDIR@|$(DOCDIR)|g' systemd/nvgred.service.in > $(DESTDIR)$(UNITDIR)/nvgred.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/nvgred.service
	install -m 0644 systemd/nvgred.sysusers $(DESTDIR)$(SYSUSERSDIR)/nvgred.conf
	install -m 0644 README.md docs/api.md docs/vms.md $(DESTDIR)$(DOCDIR)/
	cp -r wireshark grafana $(DESTDIR)$(DATADIR)/
	[ -e $(DESTDIR)$(SYSCONFDIR)/nvgred/nvgred.yaml ] || install -m 0640 systemd/nvgred.example.yaml $(DESTDIR)$(SYSCONFDIR)/nvgred/nvgred.yaml
	@if [ -z "$(DESTDIR)" ]; then \
	  command -v systemd-sysusers >/dev/null && systemd-sysusers $(SYSUSERSDIR)/nvgred.conf || true; \
	  chgrp nvgred $(SYSCONFDIR)/nvgred $(SYSCONFDIR)/nvgred/nvgred.yaml 2>/dev/null || true; \
	  [ -d /run/systemd/system ] && systemctl daemon-reload || true; \
	  echo "installed: edit $(SYSCONFDIR)/nvgred/nvgred.yaml, then systemctl enable --now nvgred"; \
	fi

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(DATADIR)
	rm -f $(DESTDIR)$(BINDIR)/nvgred $(DESTDIR)$(BINDIR)/nvgrectl $(DESTDIR)$(UNITDIR)/nvgred.service \
	  $(DESTDIR)$(SYSUSERSDIR)/nvgred.conf
	@echo "kept $(SYSCONFDIR)/nvgred and the nvgred user"

clean:
	rm -rf dist native/build native/target native/fuzz/target .deps-apt .deps-fuzz node_modules/.installed
