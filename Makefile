# ktlsh — kernel TLS handshake daemon, library and preload shim.
#
#   make                 build everything into $(BUILD)/
#   make check           install test deps, build, run unit, sanitizer, fuzz-replay and kernel suites
#   make fuzz            every libFuzzer target for FUZZ_TIME seconds (default 60)
#   make SAN=1           AddressSanitizer + UBSan build (into build-san/ by default)
#   make install         PREFIX=/usr/local DESTDIR=
#
# Sources are discovered by directory, so adding a file needs no edit here:
#   libktlsh/*.c          -> libktlsh.so / libktlsh.a   (preload*.c -> libktlsh-preload.so)
#   daemon/*.c            -> ktlshd                     (all but main.c also linked into unit tests)
#   tools/<name>.c        -> <name>                     (linked with libktlsh only)
#   tests/unit/test_*.c   -> one CUnit program each
#   tests/tools/<name>.c  -> test helper programs
#   tests/kernel/<name>.c -> kernel-suite drivers

SAN       ?=
BUILD     ?= $(if $(SAN),build-san,build)
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
SBINDIR   ?= $(PREFIX)/sbin
LIBDIR    ?= $(PREFIX)/lib
INCDIR    ?= $(PREFIX)/include
MANDIR    ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
DESTDIR   ?=

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
TTOOL_SRC   := $(wildcard tests/tools/*.c) $(wildcard tests/kernel/*.c)

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

ALL := $(LIBKTLSH_A) $(LIBKTLSH_SO) $(PRELOAD_SO) $(KTLSHD) $(TOOLS) $(UNITS) $(TTOOLS)

.PHONY: all check check-unit check-kernel deps fuzz install uninstall clean
all: $(ALL)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(LIBKTLSH_A): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBKTLSH_SO): $(LIB_OBJ) libktlsh/libktlsh.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=libktlsh/libktlsh.map \
		-Wl,-z,defs -o $@ $(LIB_OBJ) $(LDFLAGS) $(SSL_LIBS)

comma := ,
PRELOAD_MAP := $(if $(wildcard libktlsh/preload.map),-Wl$(comma)--version-script=libktlsh/preload.map)

$(BUILD)/libktlsh-preload.so: $(PRELOAD_OBJ) $(LIB_OBJ)
	$(CC) -shared -Wl,-z,defs $(PRELOAD_MAP) -o $@ $^ $(LDFLAGS) $(SSL_LIBS) -ldl -lpthread

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

check-unit: all
	scripts/check --unit-only

check-kernel: all
	scripts/check --kernel-only

install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR)/ktlsh $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR)
	install -m 0755 $(LIBKTLSH_SO) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libktlsh.so
	install -m 0644 $(LIBKTLSH_A) $(DESTDIR)$(LIBDIR)/libktlsh.a
	install -m 0644 include/ktlsh/*.h $(DESTDIR)$(INCDIR)/ktlsh/
	$(if $(PRELOAD_SO),install -m 0755 $(PRELOAD_SO) $(DESTDIR)$(LIBDIR)/libktlsh-preload.so)
	$(if $(KTLSHD),install -m 0755 $(KTLSHD) $(DESTDIR)$(SBINDIR)/ktlshd)
	$(foreach t,$(TOOLS),install -m 0755 $(t) $(DESTDIR)$(BINDIR)/;)

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libktlsh.so $(DESTDIR)$(LIBDIR)/libktlsh.a
	rm -f $(DESTDIR)$(LIBDIR)/libktlsh-preload.so $(DESTDIR)$(SBINDIR)/ktlshd
	rm -rf $(DESTDIR)$(INCDIR)/ktlsh
	$(foreach t,$(TOOLS),rm -f $(DESTDIR)$(BINDIR)/$(notdir $(t));)

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
