# Builds and installs the LD_PRELOAD library and its wrapper, from the
# repository or from the published crate's sources alike:
#   make                                 target/release/librseqalloc.so
#   make install PREFIX=$HOME/.local     PREFIX/lib/librseqalloc.so, PREFIX/bin/rseqalloc-run
#   make uninstall PREFIX=$HOME/.local   removes exactly those two files
# DESTDIR is honoured for packaging. The library is the crate built as a
# cdylib with the C API (feature `capi`), which is what preload/ builds too
# (its build script sets the same cfg and library: build.rs).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
CARGO ?= cargo
CARGO_TARGET_DIR ?= target
LIB := $(CARGO_TARGET_DIR)/release/librseqalloc.so

all: $(LIB)

# cargo knows when the library is up to date; make always asks it.
$(LIB): FORCE
	$(CARGO) rustc --release --lib -p rseqalloc --features capi --crate-type cdylib -- --cfg rseqalloc_cdylib -l dylib=c

install: $(LIB)
	install -D -m 755 $(LIB) $(DESTDIR)$(LIBDIR)/librseqalloc.so
	install -D -m 755 bin/rseqalloc-run $(DESTDIR)$(BINDIR)/rseqalloc-run

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/librseqalloc.so $(DESTDIR)$(BINDIR)/rseqalloc-run

.PHONY: all install uninstall FORCE
FORCE:
