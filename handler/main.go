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

	"github.com/remediator/remediator/internal/config"
	"github.com/remediator/remediator/internal/graph"
	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "remediator:", err)
		os.Exit(1)
	}
}

// run is the whole program, with its inputs and outputs passed in so tests
// can call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
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

// build wires the Graph client, the pacer, the engine and the HTTP API.
func build(cfg config.Config, log *slog.Logger) (*httpapi.API, *graph.Client, error) {
	gc, err := graph.New(graph.Config{BaseURL: cfg.GraphBaseURL, CallTimeout: cfg.GraphCallTimeout})
	if err != nil {
		return nil, nil, err
	}
	engine := remediate.New(gc, pace.New(cfg.GraphWriteRate, cfg.GraphReadRate),
		remediate.Config{Concurrency: cfg.MaxConcurrency}, log)
	return httpapi.New(engine, remediate.Limits{MaxDevices: cfg.MaxDevicesPerRun}, log), gc, nil
}

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
		sim, err := intunesim.Start(intunesim.New(intunesim.Generate(2026, intunesim.GenerateOptions{Devices: 5000}), intunesim.Options{}), "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer sim.Close()
		if cfg, err = config.Load(withEnv(getenv, "GRAPH_BASE_URL", sim.URL, "GRAPH_AUTH", "none")); err != nil {
			return err
		}
		log.Info("GRAPH_BASE_URL is not set: using the embedded Intune simulator", "graph_base_url", sim.URL,
			"sample_request", sampleRequest(sim.Tenant(), 3, 0, 0, 0))
	}
	api, _, err := build(cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.Port))
	if err != nil {
		return err
	}
	log.Info("listening", "addr", ln.Addr().String())
	return serveUntil(ctx, ln, api.Handler(), log)
}

// serveUntil runs an HTTP server on ln until ctx ends, then shuts it down,
// letting requests in flight finish their summaries.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
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
