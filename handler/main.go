// Command handler is remediator's single binary. It picks its runtime from
// the environment and otherwise runs a local command:
//
//	handler serve      serve POST /api/remediate on 127.0.0.1:$PORT (default)
//	handler demo       run a sample request against the embedded Intune simulator
//	handler simulate   run the Intune simulator alone, for other tools to call
//
// Without GRAPH_BASE_URL, serve starts the embedded simulator and talks to
// it, so nothing needs an Azure account to try.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/remediator/remediator/internal/awslambda"
	"github.com/remediator/remediator/internal/azure"
	"github.com/remediator/remediator/internal/config"
	"github.com/remediator/remediator/internal/graph"
	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "remediator:", err)
		os.Exit(1)
	}
}

// dispatch is the whole program, with its inputs and outputs passed in so tests
// can call it.
func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if port := getenv("FUNCTIONS_CUSTOMHANDLER_PORT"); port != "" {
		return azureWorker(ctx, port, getenv, stderr)
	}
	if getenv("AWS_LAMBDA_RUNTIME_API") != "" {
		return lambdaWorker(ctx, getenv, stderr)
	}
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, getenv, stderr)
	case "demo":
		return demo(ctx, getenv, stdout, stderr)
	case "simulate":
		return simulate(ctx, args, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, "usage: handler [serve|demo|simulate [flags]]")
		return nil
	}
	return fmt.Errorf("unknown command %q (serve, demo, simulate)", cmd)
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// Runtimes build distinguishes: where runs that outlive an answer can be
// kept.
const (
	runtimeLocal  = "local"  // serve, demo: in-process store and workers
	runtimeAzure  = "azure"  // Functions host: Azure Storage, or synchronous only
	runtimeLambda = "lambda" // no queue trigger: synchronous only
)

// withEnv overrides some settings of getenv.
func withEnv(getenv func(string) string, kv ...string) func(string) string {
	return func(k string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1]
			}
		}
		return getenv(k)
	}
}

// serve answers the API on loopback until ctx ends, then drains requests in
// flight.
func serve(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	if cfg.GraphBaseURL == "" {
		tenant := intunesim.Generate(2026, intunesim.GenerateOptions{Devices: 5000})
		opts, good, bad := rolloutScripts(tenant)
		sim, err := intunesim.Start(intunesim.New(tenant, opts), "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer func() { _ = sim.Close() }()
		if cfg, err = config.Load(withEnv(getenv, "GRAPH_BASE_URL", sim.URL, "GRAPH_AUTH", "none")); err != nil {
			return err
		}
		log.Info("GRAPH_BASE_URL is not set: using the embedded Intune simulator", "graph_base_url", sim.URL,
			"sample_request", sampleRequest(sim.Tenant(), 3, 0, 0, 0), "good_script", good, "bad_script", bad)
	}
	d, err := build(ctx, cfg, getenv, log, runtimeLocal)
	if err != nil {
		return err
	}
	api := d.api
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", cfg.Port))
	if err != nil {
		return err
	}
	log.Info("listening", "addr", ln.Addr().String())
	return serveUntil(ctx, ln, httpapi.Local(api.Handler(), ln.Addr().String()), cfg, log)
}

// serveUntil runs an HTTP server on ln until ctx ends, then shuts it down.
// Requests inherit ctx, so runs in flight stop starting new triggers,
// account for every device and answer before the server closes.
// Reading a request is bounded (HTTP_READ_TIMEOUT: a body trickled byte by
// byte does not hold a connection), and so are idle keep-alive connections
// (HTTP_IDLE_TIMEOUT).
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler, cfg config.Config, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: min(10*time.Second, cfg.HTTPReadTimeout), ReadTimeout: cfg.HTTPReadTimeout,
		IdleTimeout: cfg.HTTPIdleTimeout, BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// deployed loads the configuration of a deployed worker (Microsoft Graph
// unless GRAPH_BASE_URL says otherwise), checks the scheduled request at
// start-up, and builds the API.
func deployed(ctx context.Context, getenv func(string) string, stderr io.Writer, runtime string) (config.Config, deps, *slog.Logger, error) {
	if getenv("GRAPH_BASE_URL") == "" {
		getenv = withEnv(getenv, "GRAPH_BASE_URL", graph.DefaultBaseURL)
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return cfg, deps{}, nil, err
	}
	log := newLogger(stderr, cfg.LogLevel)
	if cfg.ScheduledRequest != nil {
		req, err := remediate.Decode(bytes.NewReader(cfg.ScheduledRequest))
		if err == nil {
			_, err = remediate.Validate(req, remediate.Limits{MaxDevices: cfg.MaxDevicesPerRun, MaxTargets: cfg.MaxTargets, MaxDeviceNames: cfg.MaxDeviceNames, MaxGroupIDs: cfg.MaxGroupIDs})
		}
		if err != nil {
			return cfg, deps{}, nil, fmt.Errorf("configuration: the scheduled request (SCHEDULED_REQUEST/SCHEDULED_REQUEST_FILE) is invalid: %w", err)
		}
	}
	d, err := build(ctx, cfg, getenv, log, runtime)
	return cfg, d, log, err
}

// azureWorker is the Azure Functions custom handler: it serves the host on
// 127.0.0.1:port until the host stops it with SIGTERM.
func azureWorker(ctx context.Context, port string, getenv func(string) string, stderr io.Writer) error {
	cfg, d, log, err := deployed(ctx, getenv, stderr, runtimeAzure)
	if err != nil {
		return err
	}
	settings := azure.Settings{
		FunctionTimeout:  cfg.FunctionTimeout,
		HTTPBudget:       cfg.HTTPResponseBudget,
		ScheduledRequest: cfg.ScheduledRequest,
	}
	if d.runs != nil {
		settings.Runs = d.runs
	}
	host := azure.New(d.api, d.svc, settings, log)
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:"+port)
	if err != nil {
		return err
	}
	log.Info("custom handler listening", "addr", ln.Addr().String(), "graph_base_url", cfg.GraphBaseURL,
		"write_rate", cfg.GraphWriteRate, "function_timeout", cfg.FunctionTimeout.String())
	err = serveUntil(ctx, ln, host.Handler(), cfg, log)
	if d.storageOps != nil {
		// What the deployment's storage costs: runs, keys, cooldowns and
		// the shared Graph budget, over the worker's life.
		log.Info("stopped", "storage_operations", d.storageOps())
	}
	return err
}

// lambdaWorker runs the AWS Lambda runtime loop. It returns only on a
// configuration error: the runtime library ends the process itself.
func lambdaWorker(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, d, log, err := deployed(ctx, getenv, stderr, runtimeLambda)
	if err != nil {
		// Report it through the Runtime API, so the caller and the logs see
		// the message instead of a bare Runtime.ExitError.
		awslambda.InitError(ctx, getenv("AWS_LAMBDA_RUNTIME_API"), err)
		return err
	}
	h := awslambda.New(d.api, d.svc, awslambda.Settings{ScheduledRequest: cfg.ScheduledRequest, DirectInvocation: cfg.DirectInvocation}, log)
	log.Info("lambda runtime starting", "graph_base_url", cfg.GraphBaseURL, "write_rate", cfg.GraphWriteRate)
	go func() {
		// The runtime loop waits on the Runtime API and never looks at ctx:
		// on SIGTERM (the environment shutting down) exit at once.
		<-ctx.Done()
		log.Info("SIGTERM: exiting")
		os.Exit(0)
	}()
	lambda.StartWithOptions(h, lambda.WithContext(ctx), lambda.WithEnableSIGTERM())
	return nil
}
