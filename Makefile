# KeyVal build, test and benchmark entry points.
GO        ?= go
STATICCHECK_VERSION ?= v0.8.2
GOBIN     := $(shell $(GO) env GOPATH)/bin
# How many random schedules the core property tests run in `make test`.
CORE_SCHEDULES ?= 600

.PHONY: all build test test-short race cover lint bench proto fmt

all: build

build:
	$(GO) build ./...

# The README's test command: unit, property and determinism tests, the race
# detector, lint, and statement coverage of core/.
test: lint
	$(GO) test -count=1 ./...
	RAPID_CHECKS=$(CORE_SCHEDULES) $(GO) test -count=1 -run 'TestProperty' ./core/
	$(GO) test -count=1 -race -short ./...
	@$(MAKE) --no-print-directory cover

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

# Regenerate protobuf code (committed, so a build needs only Go).
proto:
	@command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq protobuf-compiler)
	@test -x $(GOBIN)/protoc-gen-go || $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	PATH=$(GOBIN):$$PATH protoc --go_out=. --go_opt=paths=source_relative $$(git ls-files '*.proto')
