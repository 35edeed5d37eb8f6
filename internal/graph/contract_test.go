package graph

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/testing/simgraph"
)

// engineGraph is what the remediation engine asks of Graph, and the
// calls made.
type engineGraph interface {
	remediate.Graph
	Calls() int64
}

// volatile is what differs between two runs of the simulator: activity
// ids and the times devices report.
var volatile = regexp.MustCompile(`Activity ID: [0-9a-f-]{36}|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC`)

// transcript drives c through every call the engine makes, with faults,
// and writes down what it answered (request ids left out: the simulator
// makes new ones).
func transcript(t *testing.T, c engineGraph, sim *intunesim.Running, tenant *intunesim.Tenant) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	note := func(what string, v any, err error) {
		var ge *intune.Error
		if errors.As(err, &ge) && ge == nil {
			err = nil
		} else if ge != nil {
			err = fmt.Errorf("status=%d code=%q message=%q transport=%v retry-after=%q has-id=%v",
				ge.Status, ge.Code, ge.Message, ge.Transport, ge.RetryAfter, ge.RequestID != "")
		}
		if r, ok := v.(intune.Response); ok {
			v = fmt.Sprintf("status=%d has-id=%v", r.Status, r.RequestID != "")
		}
		line := strings.ReplaceAll(fmt.Sprintf("%s: %+v err=%v", what, v, err), sim.URL, "SIM")
		out = append(out, volatile.ReplaceAllString(line, "…"))
	}
	win := tenant.Windows(false)
	sc := tenant.RemediationScript().ID
	missing := "11111111-1111-4111-8111-111111111111"

	r, err := c.Trigger(ctx, intune.ManagedDevices, win[0].ID, sc)
	note("trigger", r, err)
	r, err = c.Trigger(ctx, intune.CoManagedDevices, tenant.Windows(true)[0].ID, sc)
	note("trigger co-managed", r, err)
	r, err = c.Trigger(ctx, intune.ManagedDevices, missing, sc)
	note("trigger missing", r, err)
	for i, f := range []intunesim.FaultKind{intunesim.Fault500, intunesim.Fault503, intunesim.FaultTextPlain, intunesim.FaultHTML,
		intunesim.FaultExpiredToken, intunesim.FaultDropBefore} {
		sim.InjectFault(win[i+1].ID, intunesim.Fault{Kind: f, Times: 1})
		r, err = c.Trigger(ctx, intune.ManagedDevices, win[i+1].ID, sc)
		note(fmt.Sprintf("trigger fault %v", f), r, err)
	}
	sim.InjectFault(win[9].ID, intunesim.Fault{Kind: intunesim.FaultLatency, Latency: 3 * time.Second, Times: 1})
	r, err = c.Trigger(ctx, intune.ManagedDevices, win[9].ID, sc)
	note("trigger timeout", r, err)

	ls, err := c.Devices(ctx, []string{win[10].ID, missing, win[11].ID})
	for _, l := range ls {
		note("lookup "+l.ID, l.Device, l.Err)
	}
	note("batch", len(ls), err)
	next := ""
	for page := 0; ; page++ {
		p, err := c.ListDevices(ctx, "operatingSystem eq 'Windows'", 7, next)
		note(fmt.Sprintf("list page %d", page), fmt.Sprintf("count=%d devices=%v more=%v", p.Count, p.Devices, p.NextLink != ""), err)
		if next = p.NextLink; next == "" || err != nil || page > 40 {
			break
		}
	}
	gp, err := c.GroupDevices(ctx, tenant.Groups[0].ID, "")
	note("group", fmt.Sprintf("%v more=%v", gp.Members, gp.NextLink != ""), err)
	_, err = c.GroupDevices(ctx, "22222222-2222-4222-8222-222222222222", "")
	note("group missing", nil, err)
	s, err := c.Script(ctx, sc)
	note("script", s, err)
	_, err = c.Script(ctx, missing)
	note("script missing", nil, err)
	rs, err := c.RunStates(ctx, sc, "")
	note("run states", fmt.Sprintf("%v more=%v", rs.States, rs.NextLink != ""), err)
	_, err = c.ListDevices(ctx, "", 0, "ftp://elsewhere/x")
	note("bad next link", nil, err)
	note("calls", c.Calls(), nil)
	return out
}

// TestSimgraphAnswersAsTheClient holds internal/testing/simgraph (the
// SDK-free client the domain's tests use) to this client: the same calls
// against the same simulated tenant, faults included, get the same
// answers.
func TestSimgraphAnswersAsTheClient(t *testing.T) {
	run := func(mk func(url string) engineGraph) []string {
		tenant := intunesim.Generate(5, intunesim.GenerateOptions{Devices: 60})
		sim, err := intunesim.Start(intunesim.New(tenant, intunesim.Options{PageSize: 5}), "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = sim.Close() })
		return transcript(t, mk(sim.URL), sim, tenant)
	}
	real := run(func(url string) engineGraph {
		c, err := New(Config{BaseURL: url, CallTimeout: 2 * time.Second})
		require.NoError(t, err)
		return c
	})
	fake := run(func(url string) engineGraph { return simgraph.New(url, 2*time.Second) })
	all := strings.Join(real, "\n")
	for _, want := range []string{"trigger: status=204", "status=404", "status=401", "not JSON (text/html", "transport=true", "timed out", "list page 3", "calls: "} {
		assert.Contains(t, all, want, "the transcript covers it")
	}
	require.Len(t, fake, len(real))
	for i := range real {
		assert.Equal(t, real[i], fake[i])
	}
}
