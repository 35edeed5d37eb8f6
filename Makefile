# remediator — the two commands are `make demo` and `make test`.
GO      ?= go
BIN     := bin/handler
GOFLAGS ?= -buildvcs=false
export GOFLAGS

.PHONY: demo test vet fmt-check build size-check bench simulate serve run package package-lambda clean

## demo: the main job against the embedded Intune simulator (no Azure account)
demo:
	$(GO) build -o $(BIN) ./handler
	./$(BIN) demo

## test: what CI runs — formatting, vet, every test with the race detector
test: fmt-check vet
	$(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

## build: the release binary (linux/amd64, static, stripped) in bin/
build:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN) ./handler
	@$(MAKE) --no-print-directory size-check

size-check:
	@size=$$(stat -c %s $(BIN)); echo "$(BIN): $$size bytes"; \
	if [ $$size -ge 20971520 ]; then echo "$(BIN) is over 20 MB"; exit 1; fi

## bench: the engine benchmark (2,000 devices at the compressed write limit) and the simulator's own
bench:
	$(GO) test -run '^$$' -bench Remediate2000 -benchtime 1x ./internal/remediate
	$(GO) test -run '^$$' -bench Simulator -benchtime 3s -cpu 1 ./internal/intunesim

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
package: build
	rm -rf dist/app && mkdir -p dist/app/bin
	cp host.json dist/app/ && cp $(BIN) dist/app/bin/
	for f in remediate alert schedule; do mkdir -p dist/app/$$f && cp $$f/function.json dist/app/$$f/; done
	cd dist/app && rm -f ../remediator.zip && zip -qr ../remediator.zip .
	@echo "dist/remediator.zip:" && unzip -l dist/remediator.zip | tail -n +4 | head -n -2

## package-lambda: dist/lambda-{amd64,arm64}.zip, a `bootstrap` for the provided.al2023 runtime
package-lambda:
	for arch in amd64 arm64; do \
		rm -rf dist/lambda-$$arch && mkdir -p dist/lambda-$$arch && \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -tags lambda.norpc -trimpath -ldflags='-s -w' -o dist/lambda-$$arch/bootstrap ./handler && \
		(cd dist/lambda-$$arch && rm -f ../lambda-$$arch.zip && zip -q ../lambda-$$arch.zip bootstrap) && \
		echo "dist/lambda-$$arch.zip: $$(stat -c %s dist/lambda-$$arch.zip) bytes" || exit 1; \
	done

clean:
	rm -rf bin dist
