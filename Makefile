# banger — build, install, test.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
CARGO ?= cargo

BINARIES := banger bangerd

.PHONY: all build install uninstall test lint bench clean

all: build

build:
	$(CARGO) build --release --locked --workspace

install: build
	install -d $(DESTDIR)$(BINDIR)
	for bin in $(BINARIES); do install -m 0755 target/release/$$bin $(DESTDIR)$(BINDIR)/$$bin; done
	@echo "installed $(BINARIES) to $(DESTDIR)$(BINDIR)"

uninstall:
	-$(BINDIR)/banger daemon stop
	for bin in $(BINARIES); do rm -f $(DESTDIR)$(BINDIR)/$$bin; done
	@echo "removed $(BINARIES) from $(DESTDIR)$(BINDIR); your data stays in ~/.config/banger and ~/.local/state/banger"

test:
	scripts/test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh tests/fixtures/*.sh .ci/run

clean:
	$(CARGO) clean
