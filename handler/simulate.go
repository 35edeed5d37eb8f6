package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/remediator/remediator/internal/intunesim"
)

// simulate runs the Intune simulator on its own until ctx ends.
func simulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	devices := fs.Int("devices", 5000, "devices in the generated tenant")
	seed := fs.Uint64("seed", 2026, "seed of the generated tenant")
	port := fs.Int("port", 8081, "port on 127.0.0.1")
	writes := fs.Int("write-limit", 200, "writes per app per window")
	window := fs.Duration("window", 20*time.Second, "throttling window")
	latency := fs.Duration("latency", 0, "latency added to every request")
	retryAfter := fs.String("retry-after", "seconds", "Retry-After style: seconds, fractional, none")
	faultRate := fs.Float64("fault-rate", 0, "probability of a random 500/503/504 per device request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tenant := intunesim.Generate(*seed, intunesim.GenerateOptions{Devices: *devices})
	opts := intunesim.Options{WriteLimit: *writes, Window: *window, Latency: *latency,
		RetryAfter: intunesim.RetryAfterMode(*retryAfter), FaultRate: *faultRate,
		FaultKinds: []intunesim.FaultKind{intunesim.Fault500, intunesim.Fault503, intunesim.Fault504}}
	sim, err := intunesim.Start(intunesim.New(tenant, opts), fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		return err
	}
	defer func() { _ = sim.Close() }()
	fmt.Fprintf(stdout, "Intune simulator: GRAPH_BASE_URL=%s GRAPH_AUTH=none\n", sim.URL)
	fmt.Fprintf(stdout, "%d devices (%d Windows); remediation script %s\n", len(tenant.Devices), len(tenant.Windows(false)), tenant.RemediationScript().ID)
	fmt.Fprintf(stdout, "sample request: %s\n", sampleRequest(tenant, 3, 1, 1, 1))
	<-ctx.Done()
	return nil
}
