# gearshift: `sudo make run` sets everything up and starts a demo; `sudo make test` runs the suite.
CARGO  ?= cargo
TARGET := x86_64-unknown-linux-gnu
BIN    := target/$(TARGET)/release/gearshift
PREFIX ?= /usr/local
CONFIG ?= /etc/gearshift/gearshift.toml

.PHONY: all build deps test lint unit e2e bench bench-density install run clean vm-test selinux-check fuzz

all: build

deps:
	@scripts/deps.sh

build:
	$(CARGO) build --release

# cycles.py: no two modules may import each other (ARCHITECTURE.md); none is tolerated.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	scripts/cycles.py
	@# fuzz/ compiles the parsers from src/ (#[path]): it must keep compiling with them.
	$(CARGO) check --quiet --manifest-path fuzz/Cargo.toml --bins

unit:
	$(CARGO) test --bins

# Each test that skips appends `binary::test: reason` to $(SKIP_FILE); the run ends with the
# list and its count. Under CI (CI set, or GEARSHIFT_TEST_STRICT=1) a test whose prerequisite is
# missing fails instead, unless it is named in tests/vm-only.txt, and so does the run if any other
# test skipped (scripts/test-skips.sh).
SKIP_FILE ?= $(CURDIR)/target/test-skips.txt
define run-tests
	@rm -f $(SKIP_FILE)
	@rc=0; GEARSHIFT_TEST_SKIP_FILE=$(SKIP_FILE) $(CARGO) test --no-fail-fast $(1) || rc=$$?; \
	  scripts/test-skips.sh $(SKIP_FILE) || rc=1; exit $$rc
endef

e2e:
	$(call run-tests,--tests --test '*' -- --test-threads=4)

test: deps lint selinux-check
	$(call run-tests,-- --test-threads=4)
	@test -x $(BIN) || $(CARGO) build --release
	@# static-pie (ASLR kept for a root daemon): ldd says "statically linked", and there is no ELF interpreter
	@ldd $(BIN) 2>&1 | grep -qE 'not a dynamic executable|statically linked' && ! readelf -l $(BIN) | grep -q INTERP \
	  && echo "static binary: ok ($$(ldd $(BIN) 2>&1 | xargs))" || { echo "gearshift is not static"; exit 1; }

# The SELinux/cgroup v2/quota tests inside an enforcing Debian VM (scripts/vm/; image cached
# in /var/cache/gearshift-vm). Skips with a reason where qemu cannot be installed, except under
# CI (CI set, or GEARSHIFT_TEST_STRICT=1), where that fails.
vm-test:
	scripts/vm/test.sh

# The parsers under libFuzzer (fuzz/, cargo fuzz on nightly, both installed here if missing):
# each target for FUZZ_SECONDS from the seeds in fuzz/seeds/TARGET; the corpus it grows stays in
# fuzz/corpus/, a crash in fuzz/artifacts/TARGET/ (replay: cd fuzz && cargo +nightly fuzz run
# TARGET FILE; then keep it as a unit test next to the parser). Not part of `make test`.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := ssh_command ssh_key http_request http_response procfile appjson_cron node_config
fuzz: deps
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz build
	@cd fuzz && mkdir -p logs && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t seeds/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: fuzz/logs/$$t.log)"; \
	  rc=0; cargo +nightly fuzz run $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	    -print_final_stats=1 >logs/$$t.log 2>&1 || rc=$$?; \
	  grep -E '^stat::number_of_executed_units|^SUMMARY|panicked at|Test unit written' logs/$$t.log; \
	  [ $$rc = 0 ] || { echo "fuzz: $$t failed (exit $$rc): see fuzz/logs/$$t.log, the input is in fuzz/artifacts/$$t/"; exit 1; }; \
	done; echo "fuzz: every target ran clean"

# The policy module must at least parse and resolve against a stub of the refpolicy names it uses.
selinux-check:
	@selinux/check.sh

bench: deps build
	scripts/bench.sh $(BIN)
	scripts/bench-router.sh

# Density: N apps (N="50 100 250 500" by default) deployed over SSH on one throw-away node, and how
# the node's figures grow with N (scripts/bench-density.sh).
bench-density: deps build
	N="$(N)" scripts/bench-density.sh $(BIN)

install: build
	install -D -m 0755 $(BIN) $(PREFIX)/bin/gearshift
	mkdir -p $(PREFIX)/share/gearshift
	rm -rf $(PREFIX)/share/gearshift/cartridges
	cp -r cartridges $(PREFIX)/share/gearshift/cartridges
	install -D -m 0644 README.md $(PREFIX)/share/doc/gearshift/README.md
	@if [ -d /run/systemd/system ]; then \
	  install -D -m 0644 scripts/gearshift.service /etc/systemd/system/gearshift.service && systemctl daemon-reload \
	  && echo "installed gearshift.service (systemctl enable --now gearshift)"; \
	else echo "no systemd here: start \`gearshift daemon\` yourself (make run does)"; fi

run: deps install
	scripts/demo.sh $(PREFIX)/bin/gearshift $(CONFIG)

clean:
	$(CARGO) clean
