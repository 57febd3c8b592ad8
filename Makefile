# banger — build, install, test.
#
#   make install [PREFIX=/usr/local] [DESTDIR=] [PROFILE=release] [SKIP_BUILD=1]
#   make uninstall
#   make install-systemd-user     (optional user unit for bangerd)
#   sudo make install-helper      (banger-helper, its system unit, group banger)
#   sudo make uninstall-helper
#   make deb [DEB_OUT=path.deb] [DEB_COMPRESS=xz|gzip|none]   (a Debian package of it all)
#
# Layout under PREFIX: bin/{banger,bangerd}; lib/banger/{banger-vsock-agent,
# banger-simvm,banger-helper} (bangerd looks for its companions next to itself, then in
# ../lib/banger/, then in PATH); share/man/man1/banger*.1; shell completions
# in share/{bash-completion/completions,zsh/site-functions,fish/vendor_completions.d}.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib/banger
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man/man1
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
SYSTEMDUSERDIR ?= $(PREFIX)/lib/systemd/user
SYSTEMDSYSTEMDIR ?= $(PREFIX)/lib/systemd/system
# The group whose members may use banger-helper.
HELPER_GROUP ?= banger
CARGO ?= cargo
# Cargo profile to build and install from (`debug` installs target/debug).
PROFILE ?= release
TARGET_DIR ?= target

ifeq ($(PROFILE),debug)
CARGO_PROFILE :=
else
CARGO_PROFILE := --profile $(PROFILE)
endif
OUT := $(TARGET_DIR)/$(PROFILE)

BINARIES := banger bangerd
COMPANIONS := banger-vsock-agent banger-simvm banger-helper

.PHONY: all build install uninstall install-systemd-user uninstall-systemd-user install-helper uninstall-helper deb test lint bench clean

all: build

build:
	$(CARGO) build $(CARGO_PROFILE) --locked --workspace

# SKIP_BUILD=1 installs what is already built (the test suite uses it).
install: $(if $(SKIP_BUILD),,build)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(MANDIR) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	for bin in $(BINARIES); do install -m 0755 $(OUT)/$$bin $(DESTDIR)$(BINDIR)/$$bin; done
	for bin in $(COMPANIONS); do install -m 0755 $(OUT)/$$bin $(DESTDIR)$(LIBDIR)/$$bin; done
	$(OUT)/banger completion bash > $(DESTDIR)$(BASHCOMPDIR)/banger
	$(OUT)/banger completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_banger
	$(OUT)/banger completion fish > $(DESTDIR)$(FISHCOMPDIR)/banger.fish
	chmod 0644 $(DESTDIR)$(BASHCOMPDIR)/banger $(DESTDIR)$(ZSHCOMPDIR)/_banger $(DESTDIR)$(FISHCOMPDIR)/banger.fish
	tmp=$$(mktemp -d) && $(OUT)/banger __generate-man "$$tmp" && \
		install -m 0644 "$$tmp"/*.1 $(DESTDIR)$(MANDIR)/ && rm -rf "$$tmp"
	@echo "installed banger into $(DESTDIR)$(PREFIX): $(BINARIES) in $(BINDIR), $(COMPANIONS) in $(LIBDIR), man pages, completions"
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory install-helper SKIP_BUILD=1; fi
	@echo "next: banger doctor"

# The privileged part: banger-helper, its system unit and the group whose
# members may use it. Into a DESTDIR (packaging) only files are installed;
# the package's scripts create the group and enable the unit. Otherwise
# (run as root) the group is created and, where systemd runs, the unit is
# enabled and (re)started; without systemd, run `banger-helper serve`.
install-helper: $(if $(SKIP_BUILD),,build)
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(SYSTEMDSYSTEMDIR)
	install -m 0755 $(OUT)/banger-helper $(DESTDIR)$(LIBDIR)/banger-helper
	sed -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@GROUP@|$(HELPER_GROUP)|g' contrib/systemd/banger-helper.service > $(DESTDIR)$(SYSTEMDSYSTEMDIR)/banger-helper.service
	chmod 0644 $(DESTDIR)$(SYSTEMDSYSTEMDIR)/banger-helper.service
	@if [ -z "$(DESTDIR)" ]; then \
		getent group $(HELPER_GROUP) >/dev/null || groupadd --system $(HELPER_GROUP); \
		if [ -d /run/systemd/system ]; then \
			systemctl daemon-reload && systemctl enable banger-helper.service && systemctl restart banger-helper.service; \
		else \
			echo "no systemd here: start the helper as root with $(LIBDIR)/banger-helper serve --group $(HELPER_GROUP)"; \
		fi; \
		echo "members of group $(HELPER_GROUP) may use banger-helper; add a user with: usermod -aG $(HELPER_GROUP) $${SUDO_USER:-USER} (then log in again)"; \
	fi

install-systemd-user:
	install -d $(DESTDIR)$(SYSTEMDUSERDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' contrib/systemd/bangerd.service > $(DESTDIR)$(SYSTEMDUSERDIR)/bangerd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUSERDIR)/bangerd.service
	@echo "installed $(SYSTEMDUSERDIR)/bangerd.service; enable with: systemctl --user daemon-reload && systemctl --user enable --now bangerd"

uninstall-systemd-user:
	rm -f $(DESTDIR)$(SYSTEMDUSERDIR)/bangerd.service

# Stops and removes banger-helper and its unit; outside a DESTDIR also the
# group (its members lose nothing else).
uninstall-helper:
	-@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && [ -f $(SYSTEMDSYSTEMDIR)/banger-helper.service ]; then \
		systemctl disable --now banger-helper.service; \
	fi
	rm -f $(DESTDIR)$(SYSTEMDSYSTEMDIR)/banger-helper.service $(DESTDIR)$(LIBDIR)/banger-helper
	-@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	-@if [ -z "$(DESTDIR)" ] && getent group $(HELPER_GROUP) >/dev/null; then groupdel $(HELPER_GROUP); fi
	-@if [ -z "$(DESTDIR)" ]; then rm -rf /var/cache/banger-helper; fi

# Stops the daemon (running VMs keep running and are adopted by the next
# one), removes what `install` put there and says where the data stays.
uninstall: uninstall-systemd-user $(if $(filter 0,$(shell id -u)),uninstall-helper,)
	-@if [ -x $(DESTDIR)$(BINDIR)/banger ]; then $(DESTDIR)$(BINDIR)/banger daemon stop; fi
	for bin in $(BINARIES); do rm -f $(DESTDIR)$(BINDIR)/$$bin; done
	for bin in $(COMPANIONS); do rm -f $(DESTDIR)$(LIBDIR)/$$bin; done
	-rmdir $(DESTDIR)$(LIBDIR) 2>/dev/null
	rm -f $(DESTDIR)$(BASHCOMPDIR)/banger $(DESTDIR)$(ZSHCOMPDIR)/_banger $(DESTDIR)$(FISHCOMPDIR)/banger.fish
	rm -f $(DESTDIR)$(MANDIR)/banger.1 $(DESTDIR)$(MANDIR)/banger-*.1
	@echo "removed banger from $(DESTDIR)$(PREFIX). Your data stays; delete it for a full purge:"
	@echo "  config      $${XDG_CONFIG_HOME:-$$HOME/.config}/banger"
	@echo "  state       $${XDG_STATE_HOME:-$$HOME/.local/state}/banger   (VMs, images, kernels, SSH key, logs)"
	@echo "  cache       $${XDG_CACHE_HOME:-$$HOME/.cache}/banger"
	@echo "  ~/.ssh/config keeps banger's Include block if you added it; delete the lines between"
	@echo "  '# >>> banger ssh-config >>>' and '# <<< banger ssh-config <<<' (ssh ignores a missing include)"

# A Debian package of everything `sudo make install` installs, under /usr:
# its postinst creates the group and enables the helper where systemd runs;
# purging removes the group. Built with dpkg-deb only (no debhelper).
DEB_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
DEB_ARCH ?= $(shell dpkg --print-architecture)
DEB_OUT ?= $(TARGET_DIR)/banger_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_COMPRESS ?= xz
DEB_ROOT ?= $(abspath $(TARGET_DIR))/deb-root

deb: $(if $(SKIP_BUILD),,build)
	rm -rf $(DEB_ROOT)
	$(MAKE) --no-print-directory install install-helper SKIP_BUILD=1 PREFIX=/usr DESTDIR=$(DEB_ROOT) >/dev/null
	install -d $(DEB_ROOT)/DEBIAN
	sed -e 's|@VERSION@|$(DEB_VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' \
		-e "s|@SIZE@|$$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1)|" \
		contrib/debian/control > $(DEB_ROOT)/DEBIAN/control
	install -m 0755 contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm $(DEB_ROOT)/DEBIAN/
	dpkg-deb --root-owner-group -Z$(DEB_COMPRESS) --build $(DEB_ROOT) $(DEB_OUT) >/dev/null
	rm -rf $(DEB_ROOT)
	@echo "built $(DEB_OUT); install with: sudo apt install ./$(notdir $(DEB_OUT)) (from its directory)"

test:
	scripts/test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh tests/fixtures/*.sh .ci/run contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm

clean:
	$(CARGO) clean
