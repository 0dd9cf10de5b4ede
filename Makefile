# ktlsh — kernel TLS handshake daemon, library and preload shim.
#
#   make                 build everything into $(BUILD)/
#   make check           install test deps, build, run unit, sanitizer, fuzz-replay and kernel suites
#   make fuzz            every libFuzzer target for FUZZ_TIME seconds (default 60)
#   make bench           ktls-bench's standard comparison -> Documentation/performance.md
#   make SAN=1           AddressSanitizer + UBSan build (into build-san/ by default)
#   make install         PREFIX=/usr/local DESTDIR= (programs, library, headers, libktlsh.pc,
#                        man pages, systemd units, a starting /etc/ktlsh/ktlshd.conf)
#   make uninstall       the same, less the configuration in SYSCONFDIR
#   make deb             Debian packages (dpkg-buildpackage -b) into $(BUILD)/deb/
#
# Sources are discovered by directory, so adding a file needs no edit here:
#   libktlsh/*.c          -> libktlsh.so / libktlsh.a   (preload*.c -> libktlsh-preload.so)
#   daemon/*.c            -> ktlshd                     (all but main.c also linked into unit tests)
#   tools/<name>.c        -> <name>                     (linked with libktlsh only)
#   tests/unit/test_*.c   -> one CUnit program each
#   tests/<dir>/<name>.c  -> build/tests/<dir>/<name>: test helpers and suite drivers

SAN       ?=
BUILD     ?= $(if $(SAN),build-san,build)
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
SBINDIR   ?= $(PREFIX)/sbin
LIBDIR    ?= $(PREFIX)/lib
INCDIR    ?= $(PREFIX)/include
DATADIR   ?= $(PREFIX)/share
MANDIR    ?= $(DATADIR)/man
DOCDIR    ?= $(DATADIR)/doc/ktlsh
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
SYSCONFDIR ?= /etc
# systemd reads units, sysusers.d, tmpfiles.d and modules-load.d from
# /usr/lib/... and from /usr/local/lib/... alike, so these follow PREFIX.
UNITDIR   ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
MODULESLOADDIR ?= $(PREFIX)/lib/modules-load.d
DESTDIR   ?=
VERSION   := $(shell sed -n 's/^\#define KTLSHD_VERSION "\(.*\)"$$/\1/p' daemon/ktlshd.h)

CC        ?= cc
WARN      := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-unused-parameter
CFLAGS    ?= -O2 -g
CFLAGS    += -std=gnu11 $(WARN) -fPIC -D_GNU_SOURCE -Iinclude -Ilibktlsh -Idaemon
ifneq ($(SAN),)
CFLAGS    += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS   += -fsanitize=address,undefined
endif

SSL_LIBS    := -lssl -lcrypto
TOOL_LIBS   := $(SSL_LIBS) -lpthread $(shell pkg-config --libs liburing 2>/dev/null)
DAEMON_LIBS := $(SSL_LIBS) -linih -lpthread $(shell pkg-config --libs libnl-genl-3.0 liburing libsystemd 2>/dev/null)
CFLAGS      += $(shell pkg-config --cflags libnl-genl-3.0 2>/dev/null)

LIB_SRC     := $(filter-out libktlsh/preload%.c,$(wildcard libktlsh/*.c))
PRELOAD_SRC := $(wildcard libktlsh/preload*.c)
DAEMON_SRC  := $(wildcard daemon/*.c)
DAEMON_LIBSRC := $(filter-out daemon/main.c,$(DAEMON_SRC))
TOOL_SRC    := $(wildcard tools/*.c)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
TTOOL_SRC   := $(filter-out tests/unit/% tests/fuzz/%,$(wildcard tests/*/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIB_OBJ     := $(call obj,$(LIB_SRC))
PRELOAD_OBJ := $(call obj,$(PRELOAD_SRC))
DAEMON_OBJ  := $(call obj,$(DAEMON_SRC))
DAEMON_LIBOBJ := $(call obj,$(DAEMON_LIBSRC))

LIBKTLSH_A  := $(BUILD)/libktlsh.a
LIBKTLSH_SO := $(BUILD)/libktlsh.so
SONAME      := libktlsh.so.0
PRELOAD_SO  := $(if $(PRELOAD_SRC),$(BUILD)/libktlsh-preload.so)
KTLSHD      := $(if $(wildcard daemon/main.c),$(BUILD)/ktlshd)
TOOLS       := $(patsubst tools/%.c,$(BUILD)/%,$(TOOL_SRC))
UNITS       := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TTOOLS      := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TTOOL_SRC))

LIBKTLSH_PC := $(BUILD)/libktlsh.pc
MANPAGES    := $(wildcard Documentation/*.[1-8])
# What `make install` ships; `all` adds the tests.
PROGRAMS := $(LIBKTLSH_A) $(LIBKTLSH_SO) $(PRELOAD_SO) $(KTLSHD) $(TOOLS) $(LIBKTLSH_PC)
ALL := $(PROGRAMS) $(UNITS) $(TTOOLS)

.PHONY: all programs check check-unit check-kernel deps fuzz bench install uninstall deb clean
all: $(ALL)
programs: $(PROGRAMS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(LIBKTLSH_A): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBKTLSH_SO): $(LIB_OBJ) libktlsh/libktlsh.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=libktlsh/libktlsh.map \
		-Wl,-z,defs -o $@ $(LIB_OBJ) $(LDFLAGS) $(SSL_LIBS)

comma := ,
PRELOAD_MAP := $(if $(wildcard libktlsh/preload.map),-Wl$(comma)--version-script=libktlsh/preload.map)

# The soname lets ldconfig cache it, so LD_PRELOAD=libktlsh-preload.so finds it.
$(BUILD)/libktlsh-preload.so: $(PRELOAD_OBJ) $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libktlsh-preload.so -Wl,-z,defs $(PRELOAD_MAP) -o $@ $^ $(LDFLAGS) \
		$(SSL_LIBS) -ldl -lpthread

# PREFIX and VERSION are in the file: rebuild it when they change.
$(LIBKTLSH_PC): libktlsh.pc.in daemon/ktlshd.h FORCE
	@mkdir -p $(dir $@)
	@sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
		-e 's|@VERSION@|$(VERSION)|' libktlsh.pc.in >$@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi

$(BUILD)/ktlshd: $(DAEMON_OBJ) $(LIBKTLSH_A)
	$(CC) -o $@ $^ $(LDFLAGS) $(DAEMON_LIBS)

$(BUILD)/%: $(BUILD)/obj/tools/%.o $(LIBKTLSH_A)
	$(CC) -o $@ $^ $(LDFLAGS) $(TOOL_LIBS)

$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(DAEMON_LIBOBJ) $(LIBKTLSH_A)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDFLAGS) $(DAEMON_LIBS) -lcunit

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(LIBKTLSH_A)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDFLAGS) $(SSL_LIBS) -lpthread

deps:
	scripts/deps

check:
	scripts/check

# Every fuzz target for FUZZ_TIME seconds (make check runs a short pass).
FUZZ_TIME ?= 60
fuzz:
	scripts/fuzz --all $(FUZZ_TIME)

# The standard comparison, natively and inside the harness; writes
# Documentation/performance.md (about 12 minutes; scripts/bench --quick: 5).
bench: all
	scripts/bench

check-unit: all
	scripts/check --unit-only

check-kernel: all
	scripts/check --kernel-only

# Units name /usr/sbin, /usr/bin and /etc; an install elsewhere rewrites them.
UNIT_SED := -e 's|/usr/sbin/ktlshd|$(SBINDIR)/ktlshd|g' -e 's|/usr/bin/ktlshctl|$(BINDIR)/ktlshctl|g' \
	-e 's|/etc/ktlsh|$(SYSCONFDIR)/ktlsh|g'

install: programs
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR)/ktlsh $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(MODULESLOADDIR) $(DESTDIR)$(DOCDIR) \
		$(DESTDIR)$(SYSCONFDIR)/ktlsh
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/ktlsh/private
	install -m 0644 $(LIBKTLSH_SO) $(DESTDIR)$(LIBDIR)/libktlsh.so.$(VERSION)
	ln -sfn libktlsh.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/libktlsh.so
	install -m 0644 $(LIBKTLSH_A) $(DESTDIR)$(LIBDIR)/libktlsh.a
	install -m 0644 $(LIBKTLSH_PC) $(DESTDIR)$(PKGCONFIGDIR)/libktlsh.pc
	install -m 0644 include/ktlsh/*.h $(DESTDIR)$(INCDIR)/ktlsh/
	$(if $(PRELOAD_SO),install -m 0644 $(PRELOAD_SO) $(DESTDIR)$(LIBDIR)/libktlsh-preload.so)
	$(if $(KTLSHD),install -m 0755 $(KTLSHD) $(DESTDIR)$(SBINDIR)/ktlshd)
	$(foreach t,$(TOOLS),install -m 0755 $(t) $(DESTDIR)$(BINDIR)/;)
	$(foreach m,$(MANPAGES),install -D -m 0644 $(m) \
		$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m));)
	sed $(UNIT_SED) systemd/ktlshd.service >$(DESTDIR)$(UNITDIR)/ktlshd.service
	sed $(UNIT_SED) systemd/ktlshd.socket >$(DESTDIR)$(UNITDIR)/ktlshd.socket
	chmod 0644 $(DESTDIR)$(UNITDIR)/ktlshd.service $(DESTDIR)$(UNITDIR)/ktlshd.socket
	install -m 0644 systemd/ktlshd.sysusers $(DESTDIR)$(SYSUSERSDIR)/ktlshd.conf
	sed $(UNIT_SED) systemd/ktlshd.tmpfiles >$(DESTDIR)$(TMPFILESDIR)/ktlshd.conf
	chmod 0644 $(DESTDIR)$(TMPFILESDIR)/ktlshd.conf
	install -m 0644 systemd/ktlshd.modules-load $(DESTDIR)$(MODULESLOADDIR)/ktlshd.conf
	install -m 0644 Documentation/ktlshd.conf.example Documentation/protocol.md $(DESTDIR)$(DOCDIR)/
	@# The operator's configuration is never overwritten.
	test -e $(DESTDIR)$(SYSCONFDIR)/ktlsh/ktlshd.conf || \
		install -m 0644 systemd/ktlshd.conf $(DESTDIR)$(SYSCONFDIR)/ktlsh/ktlshd.conf

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libktlsh.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
		$(DESTDIR)$(LIBDIR)/libktlsh.so $(DESTDIR)$(LIBDIR)/libktlsh.a \
		$(DESTDIR)$(PKGCONFIGDIR)/libktlsh.pc
	rm -f $(DESTDIR)$(LIBDIR)/libktlsh-preload.so $(DESTDIR)$(SBINDIR)/ktlshd
	rm -rf $(DESTDIR)$(INCDIR)/ktlsh
	$(foreach t,$(TOOLS),rm -f $(DESTDIR)$(BINDIR)/$(notdir $(t));)
	$(foreach m,$(MANPAGES),rm -f $(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m));)
	rm -f $(DESTDIR)$(UNITDIR)/ktlshd.service $(DESTDIR)$(UNITDIR)/ktlshd.socket \
		$(DESTDIR)$(SYSUSERSDIR)/ktlshd.conf $(DESTDIR)$(TMPFILESDIR)/ktlshd.conf \
		$(DESTDIR)$(MODULESLOADDIR)/ktlshd.conf $(DESTDIR)$(DOCDIR)/ktlshd.conf.example \
		$(DESTDIR)$(DOCDIR)/protocol.md
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/ktlsh (configuration and keys) and the user ktlsh"

# Debian packages from a copy of the tree (so that debian/'s build state
# stays out of it): $(BUILD)/deb/*.deb. Needs dpkg-dev, debhelper and the
# Build-Depends of debian/control.
deb:
	rm -rf $(BUILD)/deb && mkdir -p $(BUILD)/deb/ktlsh-$(VERSION)
	tar -c --exclude=./.git --exclude='./build' --exclude='./build-*' --exclude='./$(BUILD)' . | \
		tar -x -C $(BUILD)/deb/ktlsh-$(VERSION)
	@# The makefile this rule runs from (make -f FILE deb builds with FILE).
	cp $(firstword $(MAKEFILE_LIST)) $(BUILD)/deb/ktlsh-$(VERSION)/Makefile
	cd $(BUILD)/deb/ktlsh-$(VERSION) && dpkg-buildpackage -b -us -uc
	@ls -1 $(BUILD)/deb/*.deb

FORCE:

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
