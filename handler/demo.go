package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/config"
	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
)

// demo runs the main job end to end without Azure: a simulated tenant of
// 600 devices, the real HTTP handler stack on loopback, and a request that
// mixes eligible Windows devices with co-managed, non-Windows, missing and
// repeated ones. It prints the JSON summary and a one-line account.
func demo(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	tenant := intunesim.Generate(2026, intunesim.GenerateOptions{Devices: 600})
	opts, good, bad := rolloutScripts(tenant)
	sim, err := intunesim.Start(intunesim.New(tenant, opts), "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer func() { _ = sim.Close() }()
	// The simulated devices report their scripts' results within seconds
	// (Intune's take minutes to hours): the follow-up cache is as short.
	getenv = withEnv(getenv, "GRAPH_BASE_URL", sim.URL, "GRAPH_AUTH", "none", "AzureWebJobsStorage", "", "FOLLOW_CACHE", "1s")
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	d, err := build(ctx, cfg, getenv, newLogger(stderr, slog.LevelWarn), runtimeLocal)
	if err != nil {
		return err
	}
	api, gc := d.api, d.graph
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- serveUntil(sctx, ln, httpapi.Local(api.Handler(), ln.Addr().String()), cfg, newLogger(io.Discard, slog.LevelError))
	}()

	body := sampleRequest(tenant, 30, 4, 3, 2)
	fmt.Fprintf(stderr, "demo: simulated tenant of %d devices at %s; sending %d device entries to POST /api/remediate at %.0f triggers/s...\n",
		len(tenant.Devices), sim.URL, strings.Count(body, "device_id"), cfg.GraphWriteRate)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ln.Addr().String()+"/api/remediate", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, raw, "", "  "); err != nil {
		return fmt.Errorf("the handler answered %d with a body that is not JSON: %s", resp.StatusCode, raw)
	}
	fmt.Fprintln(stdout, pretty.String())
	var s remediate.Summary
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "HTTP %d, run %s %s: %d devices — %d triggered, %d skipped, %d failed, %d not attempted; %d Graph calls (%.2f per device), %d throttled, %d ms\n",
		resp.StatusCode, s.RunID, s.Status, s.Counts.Total, s.Counts.Succeeded, s.Counts.Skipped, s.Counts.Failed,
		s.Counts.NotAttempted, gc.Calls(), float64(gc.Calls())/float64(max(s.Counts.Total, 1)), s.Throttling.ThrottledResponses, s.DurationMS)
	if err := demoAsync(ctx, "http://"+ln.Addr().String(), tenant, stdout, stderr); err != nil {
		return err
	}
	if err := demoRollouts(ctx, "http://"+ln.Addr().String(), tenant, good, bad, stdout, stderr); err != nil {
		return err
	}
	if st, err := os.Stdin.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		// A person at a terminal: keep serving so the pages above open.
		fmt.Fprintln(stderr, "demo: serving the pages above for two minutes; press Enter to stop")
		line := make(chan struct{})
		go func() { _, _ = bufio.NewReader(os.Stdin).ReadString('\n'); close(line) }()
		select {
		case <-line:
		case <-ctx.Done():
		case <-time.After(2 * time.Minute):
		}
	}
	stop()
	return <-done
}

// sampleRequest builds a request body over tenant: windows eligible
// managed devices (one listed twice), co co-managed devices, other
// non-Windows devices and missing ids that do not exist.
func sampleRequest(tenant *intunesim.Tenant, windows, co, other, missing int) string {
	script := tenant.RemediationScript().ID
	var managed, comanaged []remediate.Target
	for _, d := range tenant.Windows(false) {
		switch {
		case d.CoManaged && len(comanaged) < co:
			comanaged = append(comanaged, remediate.Target{DeviceID: d.ID, ScriptPolicyID: script})
		case !d.CoManaged && d.JoinType != "azureADRegistered" && len(managed) < windows:
			managed = append(managed, remediate.Target{DeviceID: d.ID, ScriptPolicyID: script})
		}
	}
	if len(managed) > 0 {
		managed = append(managed, managed[0])
	}
	for _, d := range tenant.NonWindows()[:other] {
		managed = append(managed, remediate.Target{DeviceID: d.ID, ScriptPolicyID: script})
	}
	for i := range missing {
		managed = append(managed, remediate.Target{DeviceID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1), ScriptPolicyID: script})
	}
	req := remediate.Request{ManagedDevices: managed, CoManagedDevices: comanaged, IgnorePartialFailures: true,
		Timeouts: &remediate.Timeouts{Invoke: "2m"}}
	b, _ := json.Marshal(req)
	return string(b)
}

// rolloutScripts are the simulator's options for the embedded tenant of
// demo and serve: its second script never fails (good), its third fails
// on 60% of the devices (bad), for trying rollouts and their gates. (A
// first wave is a random sample: a good script that failed on a few
// devices would now and then be halted by a 95% gate, rightly, and the
// demo would say something else each time.)
func rolloutScripts(tenant *intunesim.Tenant) (opts intunesim.Options, good, bad string) {
	good, bad = tenant.Scripts[1].ID, tenant.Scripts[2].ID
	opts.ScriptFailure = map[string]float64{strings.ToLower(good): 0, strings.ToLower(bad): 0.6}
	return opts, good, bad
}
