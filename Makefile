# KeyVal build, test and benchmark entry points.
GO        ?= go
STATICCHECK_VERSION ?= v0.8.2
GOBIN     := $(shell $(GO) env GOPATH)/bin
# The core property tests in `make test`: at least PROPERTY_SCHEDULES random
# schedules per test, then more until PROPERTY_BUDGET is spent (a bug that
# needs ~2,000 schedules is within reach; docs/core.md).
PROPERTY_SCHEDULES ?= 2000
PROPERTY_BUDGET    ?= 10s
# make test-deep: the longer searches CI runs after make test.
DEEP_PROPERTY_BUDGET ?= 30s
DEEP_SWARM_BUDGET    ?= 60

.PHONY: all build test test-deep fuzz cover lint bench bench-cluster bench-cluster-smoke bench-compare proto fmt sim sim-swarm \
	cluster-start cluster-status cluster-stop integration-test chaos-test

# The local cluster of make cluster-start: three members on 127.0.0.1, each
# with its data directory under $(CLUSTER_DIR)/data. A running keyvald keeps
# its pid in <data dir>/keyvald.pid; one removed from the cluster leaves
# <data dir>/removed.
CLUSTER_DIR ?= .cluster
CLUSTER     := 1=127.0.0.1:2380,2=127.0.0.1:12380,3=127.0.0.1:22380
CLIENT_PORTS := 1:2379 2:12379 3:22379
# kvctl's --endpoints for them (its default when the ports are these).
comma := ,
space := $() $()
CLUSTER_ENDPOINTS = $(subst $(space),$(comma),$(foreach p,$(CLIENT_PORTS),127.0.0.1:$(word 2,$(subst :, ,$(p)))))

# make sim SEED=n replays one simulator seed; make sim-swarm runs many.
SEED    ?= 1
SEEDS   ?= 1000
BUDGET  ?= 0
START   ?= $(shell date +%s)

all: build

build:
	$(GO) build ./...
	$(GO) build -o bin/ ./cmd/...

# etcd's etcdctl, at the version tools/etcdctl/go.mod pins, for driving
# KeyVal through etcd's v3 API (docs/etcd.md). Its own module: etcdctl's
# dependencies stay out of KeyVal's.
.PHONY: etcdctl
etcdctl:
	cd tools/etcdctl && $(GO) build -o ../../bin/etcdctl go.etcd.io/etcd/etcdctl/v3

# etcd's benchmark tool, for driving KeyVal through etcd's v3 API the way
# people compare stores (make bench-cluster and bench-compare run it;
# docs/bench.md). The Go module proxy refuses go.etcd.io/etcd/tools/v3 at
# every version (v3.6.14 too, asked on 2026-12-03), so it is
# built from Debian's etcd source tarball, checked against the sha256 of
# Debian's etcd_3.4.23-4.dsc; its dependencies come from the proxy. It is
# etcd 3.4's tool: the v3 API it speaks is the one KeyVal serves. Tarball,
# sources and binary all stay out of git (.benchdata/ and bin/).
ETCD_SRC_VERSION := 3.4.23
ETCD_SRC_SHA256  := 055c608c4898d25f23aefbc845ff074bf5e8a07e61ed41dbd5cc4d4f59c93093
ETCD_SRC_URL     := http://deb.debian.org/debian/pool/main/e/etcd/etcd_$(ETCD_SRC_VERSION).orig.tar.gz
ETCD_SRC_DIR     := .benchdata/etcd-src
ETCD_TARBALL     := $(ETCD_SRC_DIR)/etcd_$(ETCD_SRC_VERSION).orig.tar.gz

ETCD_SRC_TREE    := $(ETCD_SRC_DIR)/etcd-$(ETCD_SRC_VERSION)

.PHONY: etcd-benchmark
etcd-benchmark: bin/etcd-benchmark

# Rebuilt only when missing or older than the tarball (a new version).
bin/etcd-benchmark: $(ETCD_SRC_TREE)/.extracted
	cd $(ETCD_SRC_TREE) && GOFLAGS=-mod=mod $(GO) build -o $(CURDIR)/bin/etcd-benchmark ./tools/benchmark

# etcd's server at the version tools/etcd/go.mod pins, from the Go module
# proxy alone, run beside KeyVal by make bench-compare and make
# bench-cluster's watch-lease step so that both are measured in one run.
# Its own module, as etcdctl's: etcd's server stays out of KeyVal's.
.PHONY: etcd
etcd:
	cd tools/etcd && $(GO) build -o ../../bin/etcd .

# The stamp takes the tarball's time, so a binary built from an earlier
# extraction of the same tarball stays current.
$(ETCD_SRC_TREE)/.extracted: $(ETCD_TARBALL)
	rm -rf $(ETCD_SRC_TREE)
	tar -xzf $< -C $(ETCD_SRC_DIR)
	touch -r $< $@

# Kept only once its checksum matches: a failed or tampered download leaves
# nothing behind to be trusted next time.
$(ETCD_TARBALL):
	mkdir -p $(@D)
	curl -fsSL --retry 3 -o $@.part $(ETCD_SRC_URL)
	echo "$(ETCD_SRC_SHA256)  $@.part" | sha256sum -c --quiet - || { rm -f $@.part; echo "$(ETCD_SRC_URL): sha256 mismatch"; exit 1; }
	mv $@.part $@

# The binaries the local cluster needs, and only those (incremental: about
# a second when nothing changed).
.PHONY: cluster-bins
cluster-bins:
	@$(GO) build -o bin/ ./cmd/keyvald ./cmd/kvctl

# Shell, with f a pid file: pid is the keyvald it names, or empty if there
# is none (a file left by a crash names a process that is gone, or that is
# no longer keyvald).
KEYVALD_PID = pid=$$(cat "$$f" 2>/dev/null); \
	[ -n "$$pid" ] && [ "$$(ps -p "$$pid" -o comm= 2>/dev/null)" = keyvald ] || pid=

# Start the three members in the background, logs under $(CLUSTER_DIR)/logs.
# Starting again resumes from the same data; a member already running, or
# removed from the cluster, is left alone.
cluster-start: cluster-bins
	@mkdir -p $(CLUSTER_DIR)/logs
	@for pair in $(CLIENT_PORTS); do \
	  id=$${pair%%:*}; port=$${pair##*:}; peer=$$((port+1)); dir=$(CLUSTER_DIR)/data/$$id; f=$$dir/keyvald.pid; \
	  if [ -f $$dir/removed ]; then echo "not starting node $$id: $$(cat $$dir/removed)"; continue; fi; \
	  $(KEYVALD_PID); \
	  if [ -n "$$pid" ]; then echo "node $$id already running (pid $$pid)"; continue; fi; \
	  nohup ./bin/keyvald --id $$id --data-dir $$dir \
	    --listen-client 127.0.0.1:$$port --listen-peer 127.0.0.1:$$peer --listen-metrics 127.0.0.1:$$((port+2)) \
	    --listen-client-http 127.0.0.1:$$((port+3)) \
	    --initial-cluster $(CLUSTER) >> $(CLUSTER_DIR)/logs/$$id.log 2>&1 & \
	  echo "node $$id: client 127.0.0.1:$$port, peer 127.0.0.1:$$peer, metrics http://127.0.0.1:$$((port+2))/metrics, etcd JSON gateway http://127.0.0.1:$$((port+3))/v3/, log $(CLUSTER_DIR)/logs/$$id.log"; \
	done
	@for i in $$(seq 1 100); do ./bin/kvctl --endpoints $(CLUSTER_ENDPOINTS) status -o json 2>/dev/null | grep -q '"leader_id": [1-9]' && break; sleep 0.1; done
	@./bin/kvctl --endpoints $(CLUSTER_ENDPOINTS) status || (echo "the cluster did not come up; see $(CLUSTER_DIR)/logs"; exit 1)

cluster-status: cluster-bins
	@./bin/kvctl --endpoints $(CLUSTER_ENDPOINTS) status

# Stop every keyvald with its data directory under $(CLUSTER_DIR), those
# started by hand too: SIGTERM to all, then wait for each. ($(CLUSTER_DIR)/*.pid
# are the pid files of earlier versions of this Makefile.)
cluster-stop:
	@pids=; for f in $(CLUSTER_DIR)/data/*/keyvald.pid $(CLUSTER_DIR)/*.pid; do \
	  $(KEYVALD_PID); \
	  [ -n "$$pid" ] || continue; \
	  case " $$pids " in *" $$pid "*) continue;; esac; \
	  kill -TERM $$pid && pids="$$pids $$pid" && echo "stopping keyvald $$pid ($$f)"; \
	done; \
	for pid in $$pids; do \
	  for i in $$(seq 1 100); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	  if kill -0 $$pid 2>/dev/null; then echo "pid $$pid is still running after 10s"; fi; \
	done; \
	rm -f $(CLUSTER_DIR)/*.pid

# Every runnable example of README.md and docs/*.md (blocks marked
# <!-- doctest -->), typed in order on a fresh make cluster-start in a
# copy of the working tree; uses make cluster-start's fixed ports, so no
# other local cluster may run meanwhile (internal/doctest).
.PHONY: doc-test
doc-test:
	$(GO) test -count=1 -v -tags docs -timeout 30m -run TestDocumentExamples ./internal/doctest/

# Real keyvald processes on loopback: failover, catch-up, restarts, bad input,
# with every client operation checked for linearizability.
integration-test: build
	$(GO) test -count=1 -tags integration -timeout 10m ./server/integration/...

# The chaos test (docs/chaos.md): real keyvald processes, in network
# namespaces when run as root, under kill -9, pauses, partitions, rolling
# restarts and membership changes while clients write; judged for
# linearizability and lost writes. A fresh seed each run unless CHAOS_SEED.
CHAOS_DURATION ?= 2m
CHAOS_NODES    ?= 3
CHAOS_SEED     ?= $(shell date +%s)
CHAOS_NEMESES  ?= all
chaos-test: build
	$(GO) build -o bin/kvchaos ./cmd/kvchaos
	./bin/kvchaos --duration $(CHAOS_DURATION) --nodes $(CHAOS_NODES) --seed $(CHAOS_SEED) --nemeses $(CHAOS_NEMESES)

# The README's test command: unit, property and determinism tests, the race
# detector, lint, and statement coverage of core/.
test: lint
	$(GO) test -count=1 ./...
	KEYVAL_CLIENT_UNARY=1 $(GO) test -count=1 ./client/
	RAPID_CHECKS=$(PROPERTY_SCHEDULES) KEYVAL_PROPERTY_BUDGET=$(PROPERTY_BUDGET) $(GO) test -count=1 -run 'TestProperty' ./core/
	$(GO) test -count=1 -race -short ./...
	@$(MAKE) --no-print-directory cover

# The longer searches, kept out of the inner loop (CI runs them too): the
# fuzz targets, deeper property runs, and a timed simulator swarm over every
# fault model (each seed draws its own; half of them change the membership),
# a quarter of its time at the server's default election timeout (5 ticks),
# then one over membership seeds only, the auth and etcd workloads, and WAL
# repair. A fresh base seed each run.
test-deep: fuzz
	RAPID_CHECKS=$(PROPERTY_SCHEDULES) KEYVAL_PROPERTY_BUDGET=$(DEEP_PROPERTY_BUDGET) $(GO) test -count=1 -run 'TestProperty' ./core/
	$(GO) run ./cmd/kvsim -swarm -seed $(START) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) * 3 / 4 ))s
	$(GO) run ./cmd/kvsim -swarm -election-ticks 5 -seed $$(( $(START) * 37 )) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) / 4 ))s
	$(GO) run ./cmd/kvsim -swarm -membership -seed $$(( $(START) * 7 )) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) / 2 ))s
	$(GO) run ./cmd/kvsim -swarm -auth -seed $$(( $(START) * 11 )) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) / 4 ))s
	$(GO) run ./cmd/kvsim -swarm -etcd -seed $$(( $(START) * 13 )) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) / 4 ))s
	$(GO) run ./cmd/kvsim -swarm -repair -seed $$(( $(START) * 17 )) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) / 4 ))s
	$(GO) run ./cmd/kvsim -swarm -damage-all -seed $$(( $(START) * 19 )) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) / 4 ))s
	$(GO) run ./cmd/kvsim -swarm -lost-writes -seed $$(( $(START) * 23 )) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) / 4 ))s
	$(GO) run ./cmd/kvsim -swarm -slow-snapshots -seed $$(( $(START) * 29 )) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) / 4 ))s
	$(GO) run ./cmd/kvsim -swarm -gone-notices -seed $$(( $(START) * 31 )) -count 1000000 -budget $$(( $(DEEP_SWARM_BUDGET) / 4 ))s

# A few seconds of each fuzz target, counted in executions: a time limit can
# end a run mid-minimisation with a spurious "context deadline exceeded".
# (The committed seed corpora also run in
# every plain go test).
FUZZTIME ?= 20000x
fuzz:
	$(GO) test ./disk/ -run '^$$' -fuzz '^FuzzWALDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./disk/ -run '^$$' -fuzz '^FuzzSnapshotReader$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./kvstore/ -run '^$$' -fuzz '^FuzzApplyCommand$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./kvstore/ -run '^$$' -fuzz '^FuzzRestore$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./kvstore/ -run '^$$' -fuzz '^FuzzRestoreRecords$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./raftpb/ -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s

cover:
	@$(GO) test -count=1 -coverprofile=.cover.core.out ./core/ >/dev/null
	@$(GO) tool cover -func=.cover.core.out | awk '/^total:/ {print "core/ statement coverage: " $$3}'
	@rm -f .cover.core.out

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null; git ls-files --others --exclude-standard '*.go' 2>/dev/null)); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN)/staticcheck ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# The cluster benchmark: a fresh 3-member cluster on the real disk (under
# .benchdata/), the write/read matrix, failover trials, restart catch-up and
# memory; the report goes to .benchdata/bench-cluster.md (docs/bench.md holds
# the figures of record). The smoke mode runs everything tiny, for CI,
# without etcd's server beside KeyVal (building it takes minutes and a
# tiny run's ratios mean nothing).
BENCH_FLAGS ?=
bench-cluster: etcd-benchmark etcd
	$(GO) run ./cmd/benchcluster $(BENCH_FLAGS)

bench-cluster-smoke: etcd-benchmark
	$(GO) run ./cmd/benchcluster --smoke --etcd-server none

# KeyVal and etcd side by side in one run (issue 17; docs/bench.md): two
# three-member clusters on 127.0.0.1 with the same timeouts, snapshot
# interval and compaction; puts at 1-256 clients, puts offered at 5,000
# and 10,000/s (open loop) and gets at 64 from etcd's benchmark tool
# (against both) and kvbench (pipelined and unary), then failover trials,
# in interleaved rounds; last, both clusters' memory through ten minutes
# of overwrites (--compare-memory 0 skips it); report in
# .benchdata/bench-compare.md. About 25 minutes; BENCH_COMPARE_FLAGS=--smoke
# checks the tooling in about a minute.
BENCH_COMPARE_FLAGS ?=
bench-compare: etcd-benchmark etcd
	$(GO) run ./cmd/benchcluster --steps compare $(BENCH_COMPARE_FLAGS)

sim:
	@$(GO) run ./cmd/kvsim -seed $(SEED) $(if $(VIS),-vis) $(if $(AUTH),-auth) $(if $(ETCD),-etcd) $(if $(REPAIR),-repair) $(if $(DAMAGE_ALL),-damage-all) $(if $(LOST_WRITES),-lost-writes) $(if $(SLOW_SNAPSHOTS),-slow-snapshots) $(if $(GONE_NOTICES),-gone-notices) $(if $(ELECTION_TICKS),-election-ticks $(ELECTION_TICKS))

sim-swarm:
	@$(GO) run ./cmd/kvsim -swarm -seed $(START) -count $(SEEDS) -budget $(BUDGET)s $(if $(MEMBERSHIP),-membership) $(if $(AUTH),-auth) $(if $(ETCD),-etcd) $(if $(REPAIR),-repair) $(if $(DAMAGE_ALL),-damage-all) $(if $(LOST_WRITES),-lost-writes) $(if $(SLOW_SNAPSHOTS),-slow-snapshots) $(if $(GONE_NOTICES),-gone-notices) $(if $(ELECTION_TICKS),-election-ticks $(ELECTION_TICKS))

# Every bug planted by sim/testdata/teeth/*.patch, each in a scratch copy of
# the working tree, must be caught by the check its header records, and
# main must pass that check (docs/sim.md, "The simulator has teeth").
.PHONY: teeth
teeth:
	@GO=$(GO) sim/testdata/teeth/run.sh

# Regenerate protobuf code (committed, so a build needs only Go).
proto:
	@command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq protobuf-compiler)
	@test -x $(GOBIN)/protoc-gen-go || $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	@test -x $(GOBIN)/protoc-gen-go-grpc || $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	PATH=$(GOBIN):$$PATH protoc --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative $$(git ls-files --cached --others --exclude-standard '*.proto')
