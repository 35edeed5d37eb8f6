# remediator — the two commands are `make demo` and `make test`.
GO      ?= go
BIN     := bin/handler
# One toolchain for everything: go.mod's toolchain line (go1.26.10, which
# fixes standard-library vulnerabilities of older 1.26 releases) comes
# through the module proxy, whatever GOTOOLCHAIN the machine's go.env says.
export GOTOOLCHAIN := auto
# One set of build flags for the demo, vet, lint and the release build, so
# the Graph SDK's models package (~5 minutes and 10 GB per cold compile)
# compiles once for all of them, and once more for the race-enabled tests.
# lambda.norpc leaves out aws-lambda-go's net/rpc mode, whose reflection
# would keep all of the SDK's models in the binary (85 MB instead of 11).
export GOFLAGS     := -buildvcs=false -trimpath -tags=lambda.norpc
export CGO_ENABLED := 0

# Tools, all through the Go module proxy.
GOLANGCI_VERSION    := v2.15.0
GOVULNCHECK_VERSION := v1.9.0
VULNDB_VERSION      := v0.0.0-20261105234957-e22db6528018
TOOLS               := $(CURDIR)/.tools
FUZZTIME            ?= 60s
# Azurite, the Azure Storage emulator the run-store tests use, from npm.
AZURITE_VERSION     := 3.35.0
AZURITE             := $(TOOLS)/azurite/node_modules/.bin/azurite
# The browser test drives Debian's Chromium with playwright-core and checks
# accessibility with axe-core, both from npm.
PLAYWRIGHT_VERSION  := 1.64.1
AXE_VERSION         := 4.14.1
BROWSER_TOOLS       := $(TOOLS)/browser
CHROMIUM            ?= chromium

.PHONY: azurite browser-test demo test test-race vet fmt-check tidy-check settings-doc build size-check bench simulate serve run package package-lambda lint tools fuzz soak clean

## demo: the main job against the embedded Intune simulator (no Azure account)
demo:
	$(GO) build -o $(BIN) ./handler
	./$(BIN) demo

# The packages whose tests link the Graph SDK (internal/architecture's
# test keeps this list exact): make test runs them with the demo's flags,
# so that a first make test after make demo compiles the SDK's models
# package no second time; every other package runs under the race detector.
SDK_TESTS := ./handler ./internal/graph
RACE     := AZURITE=$(AZURITE) CGO_ENABLED=1 GORACE=atexit_sleep_ms=0 $(GO) test -race -count=1

## test: formatting, vet, the tests of every package (the race detector on all but SDK_TESTS)
test: fmt-check vet azurite
	@echo "race-enabled: every package but $(SDK_TESTS); at the same time, without: $(SDK_TESTS)"
	@$(RACE) $$($(GO) list ./... | grep -v -x $(foreach p,$(SDK_TESTS),-e '.*/$(patsubst ./%,%,$(p))')) & race=$$!; \
	AZURITE=$(AZURITE) $(GO) test -count=1 $(SDK_TESTS); rc=$$?; wait $$race || rc=1; exit $$rc

## test-race: every test under the race detector (what CI runs after make test; the race-enabled
## build of the SDK's models package costs another ~5 minutes and 10 GB once)
test-race: fmt-check vet azurite
	$(RACE) ./...

## browser-test: the run as a page in headless Chromium (Debian's chromium package): DOM, accessibility
## (axe-core), 375 px, the page's forms and CSP; writes docs/run-page.png and docs/rollout-page.png
browser-test: $(BROWSER_TOOLS)/node_modules/axe-core
	@command -v $(CHROMIUM) >/dev/null || { echo "Chromium is needed: apt-get install chromium (or set CHROMIUM=/path/to/chromium)"; exit 1; }
	$(GO) build -o $(BIN) ./handler
	BROWSER_TOOLS=$(BROWSER_TOOLS) CHROMIUM=$$(command -v $(CHROMIUM)) node browser/check.mjs

$(BROWSER_TOOLS)/node_modules/axe-core:
	@command -v npm >/dev/null || { echo "npm is needed for the browser test's tools (apt-get install nodejs npm)"; exit 1; }
	npm install --no-audit --no-fund --silent --prefix $(BROWSER_TOOLS) playwright-core@$(PLAYWRIGHT_VERSION) axe-core@$(AXE_VERSION)

## azurite: install Azurite under .tools (needs Node.js and npm)
azurite: $(AZURITE)
$(AZURITE):
	@command -v npm >/dev/null || { echo "npm is needed to install Azurite (apt-get install nodejs npm)"; exit 1; }
	npm install --no-audit --no-fund --silent --prefix $(TOOLS)/azurite azurite@$(AZURITE_VERSION)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

## tidy-check: go.mod and go.sum are what `go mod tidy` makes them
tidy-check:
	$(GO) mod tidy -diff

## settings-doc: rewrite docs/reference.md's settings and status tables from internal/config and internal/httpapi
settings-doc:
	$(GO) test ./internal/config -run TestREADMESettingsTable -update
	$(GO) test ./internal/httpapi -run TestREADMEStatusTable -update

## build: the release binary (linux/amd64, static, stripped) in bin/, with the flags above
build:
	GOOS=linux GOARCH=amd64 $(GO) build -ldflags='-s -w' -o $(BIN) ./handler
	@$(MAKE) --no-print-directory size-check

size-check:
	@size=$$(stat -c %s $(BIN)); echo "$(BIN): $$size bytes"; \
	if [ $$size -ge 20971520 ]; then echo "$(BIN) is over 20 MB"; exit 1; fi

## bench: the engine (2,000 devices at the compressed write limit), target resolution over 100,000
## devices, the simulator's own throughput, and tenant scale (three handler processes on Azurite)
bench: azurite
	$(GO) test -run '^$$' -bench 'Remediate2000|ResolveFilter100k' -benchtime 1x ./internal/remediate
	$(GO) test -run '^$$' -bench 'AsyncRun100k|Rollout' -benchtime 1x ./internal/runs
	$(GO) test -run '^$$' -bench Simulator -benchtime 3s -cpu 1 ./internal/intunesim
	AZURITE=$(AZURITE) $(GO) test -run '^$$' -bench 'Tenants|OneTenantProcesses|Fairness|FrozenProcess|StorageLatency|StorageOutage|OtherClient|PagingProcesses' -benchtime 1x -timeout 40m ./handler

## simulate: the Intune simulator alone on 127.0.0.1:8081
simulate:
	$(GO) run ./handler simulate --devices 5000 --port 8081

## serve: the HTTP API on 127.0.0.1:$$PORT (default 8080), simulator behind it unless GRAPH_BASE_URL is set
serve:
	$(GO) build -o $(BIN) ./handler
	./$(BIN) serve

## run: the binary as the Azure Functions host starts it, on 127.0.0.1:$$PORT (default 7071),
## with the simulator behind GRAPH_BASE_URL unless Azure settings are given
run:
	$(GO) build -o $(BIN) ./handler
	@./$(BIN) simulate --port 8081 --devices 5000 & sim=$$!; trap "kill $$sim" EXIT INT TERM; sleep 1; \
	FUNCTIONS_CUSTOMHANDLER_PORT=$${PORT:-7071} GRAPH_BASE_URL=$${GRAPH_BASE_URL:-http://127.0.0.1:8081/beta} \
	GRAPH_AUTH=$${GRAPH_AUTH:-none} ./$(BIN)

## package: dist/remediator.zip, the layout `func azure functionapp publish` and zip deploy expect
## (host.json, every function folder, bin/handler, the example requests; see deploy/main.go)
package: build
	$(GO) run ./deploy -o dist/remediator.zip

## package-lambda: dist/lambda-{amd64,arm64}.zip, a `bootstrap` for the provided.al2023 runtime
package-lambda:
	for arch in amd64 arm64; do \
		rm -rf dist/lambda-$$arch && mkdir -p dist/lambda-$$arch && \
		GOOS=linux GOARCH=$$arch $(GO) build -ldflags='-s -w' -o dist/lambda-$$arch/bootstrap ./handler && \
		(cd dist/lambda-$$arch && rm -f ../lambda-$$arch.zip && zip -q ../lambda-$$arch.zip bootstrap) && \
		echo "dist/lambda-$$arch.zip: $$(stat -c %s dist/lambda-$$arch.zip) bytes" || exit 1; \
	done

## lint: gofmt, go mod tidy, go vet, golangci-lint (.golangci.yml) and govulncheck against the Go
## vulnerability database, all installed from the module proxy into .tools/ (no other network needed)
lint: fmt-check tidy-check vet tools
	$(TOOLS)/golangci-lint run ./...
	$(TOOLS)/govulncheck -db file://$(TOOLS)/vulndb ./...

tools: $(TOOLS)/golangci-lint $(TOOLS)/govulncheck $(TOOLS)/vulndb/index/db.json

$(TOOLS)/golangci-lint:
	GOBIN=$(TOOLS) GOFLAGS= CGO_ENABLED=0 $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

$(TOOLS)/govulncheck:
	GOBIN=$(TOOLS) GOFLAGS= $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)

# The vulnerability database comes as the golang.org/x/vulndb module; its
# indexdb command builds the file database govulncheck reads.
$(TOOLS)/vulndb/index/db.json:
	GOBIN=$(TOOLS) GOFLAGS= $(GO) install golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION)
	dir=$$(cd $(TOOLS) && GOFLAGS=-mod=mod $(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/.*"Dir": "\(.*\)",/\1/p'); \
	rm -rf $(TOOLS)/vulndb && $(TOOLS)/indexdb -vulns $$dir/data/osv -out $(TOOLS)/vulndb

## fuzz: every fuzz target for FUZZTIME each (default 60s)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeValidate$$' -fuzztime $(FUZZTIME) ./internal/remediate
	$(GO) test -run '^$$' -fuzz '^FuzzRemediateNeverAServerError$$' -fuzztime $(FUZZTIME) ./internal/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzEnvelope$$' -fuzztime $(FUZZTIME) ./internal/azure
	$(GO) test -run '^$$' -fuzz '^FuzzMap$$' -fuzztime $(FUZZTIME) ./internal/alert
	$(GO) test -run '^$$' -fuzz '^FuzzRetryAfter$$' -fuzztime $(FUZZTIME) ./internal/pace
	$(GO) test -run '^$$' -fuzz '^FuzzErrorBody$$' -fuzztime $(FUZZTIME) ./internal/graph

## soak: 10,000 devices through random faults and a deadline (a benchmark, so make test stays fast)
soak:
	$(GO) test -run '^$$' -bench '^BenchmarkSoak$$' -benchtime 1x -timeout 20m ./internal/remediate

clean:
	rm -rf bin dist
