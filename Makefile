# pgdog_reshard: the PGXS build of record (the extension). CMakeLists.txt builds the core and its tests.
EXTENSION = pgdog_reshard
MODULE_big = pgdog_reshard
DATA = $(wildcard sql/$(EXTENSION)--*.sql)
OBJS = $(patsubst %.cpp,%.o,$(sort $(wildcard src/core/*.cpp src/engine/*.cpp src/extension/*.cpp)))

PG_CONFIG ?= pg_config
PG_INCLUDEDIR := $(shell $(PG_CONFIG) --includedir)
PG_SERVER_INCLUDEDIR := $(shell $(PG_CONFIG) --includedir-server)

# Server headers as system headers: their C idioms are not ours to warn about.
PG_CPPFLAGS = -Isrc -isystem $(PG_SERVER_INCLUDEDIR) -isystem $(PG_INCLUDEDIR)
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-register -Wno-missing-field-initializers
ifeq ($(CI),true)
PG_CXXFLAGS += -Werror
endif
SHLIB_LINK_INTERNAL = $(libpq)
SHLIB_LINK += -lstdc++

# pg_regress on a temporary instance with the library preloaded: no running server needed.
# PostgreSQL refuses to run as root: run `make installcheck` as an ordinary user (see .ci/run).
REGRESS = setup config boundary hash_shard hash_oracle security cutover tasks
REGRESS_OUTPUTDIR ?= /tmp/pgdog_reshard_regress
REGRESS_OPTS = --temp-instance=$(REGRESS_OUTPUTDIR)/tmp_instance --temp-config=test/regress.conf \
	--outputdir=$(REGRESS_OUTPUTDIR) --inputdir=$(CURDIR)

# Rebuild objects when a header they include changes (PGXS leaves this off by default; a stale
# object compiled against an older class layout is a silent crash).
override autodepend = yes

# PGXS would compile LLVM bitcode with clang, which knows nothing of our C++ flags; the engine is
# not JIT material anyway.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
