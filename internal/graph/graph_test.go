package graph

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
)

func setup(t *testing.T, devices int, opts intunesim.Options) (*Client, *intunesim.Running, *intunesim.Tenant) {
	t.Helper()
	tenant := intunesim.Generate(5, intunesim.GenerateOptions{Devices: devices})
	sim, err := intunesim.Start(intunesim.New(tenant, opts), "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sim.Close() })
	c, err := New(Config{BaseURL: sim.URL, CallTimeout: 2 * time.Second})
	require.NoError(t, err)
	return c, sim, tenant
}

func coManaged(tenant *intunesim.Tenant) intunesim.Device { return tenant.Windows(true)[0] }

func TestTriggerSendsPlainJSONAndReturnsRequestID(t *testing.T) {
	c, sim, tenant := setup(t, 60, intunesim.Options{})
	d, sc := tenant.Windows(false)[0], tenant.RemediationScript().ID
	resp, err := c.Trigger(context.Background(), intune.ManagedDevices, d.ID, sc)
	require.NoError(t, err)
	assert.Equal(t, 204, resp.Status)
	assert.NotEmpty(t, resp.RequestID)

	co := coManaged(tenant)
	_, err = c.Trigger(context.Background(), intune.CoManagedDevices, co.ID, sc)
	require.NoError(t, err)

	recs := sim.Records()
	require.Len(t, recs, 2)
	assert.Equal(t, "/beta/deviceManagement/managedDevices/"+d.ID+"/initiateOnDemandProactiveRemediation", recs[0].Path)
	assert.Equal(t, "/beta/deviceManagement/comanagedDevices/"+co.ID+"/initiateOnDemandProactiveRemediation", recs[1].Path)
	assert.JSONEq(t, `{"scriptPolicyId":"`+sc+`"}`, string(recs[0].Body))
	assert.Empty(t, recs[0].Header.Get("Content-Encoding"), "request compression is off")
	assert.NotEmpty(t, recs[0].Header.Get("client-request-id"))
	assert.Contains(t, recs[0].Header.Get("SdkVersion"), "graph-go-beta/0.165.0")
	assert.Equal(t, 1, sim.TriggerCount(d.ID, sc))
	assert.EqualValues(t, 2, c.Calls())
}

func TestErrorsKeepStatusCodeAndIDs(t *testing.T) {
	c, sim, tenant := setup(t, 60, intunesim.Options{})
	sc := tenant.RemediationScript().ID
	win := tenant.Windows(false)
	tests := []struct {
		name        string
		fault       intunesim.Fault
		status      int
		code        string
		message     string
		transport   bool
		unavailable bool
	}{
		{"intune 500 with embedded JSON message", intunesim.Fault{Kind: intunesim.Fault500}, 500, "InternalError", "An error has occurred - Operation ID", false, false},
		{"503", intunesim.Fault{Kind: intunesim.Fault503}, 503, "CancelledOnServiceTimeout", "cancelled", false, true},
		{"504", intunesim.Fault{Kind: intunesim.Fault504}, 504, "GatewayTimeout", "gateway", false, true},
		{"{} body does not panic", intunesim.Fault{Kind: intunesim.FaultEmptyJSON}, 500, "", "error body without a message", false, false},
		{"text/plain body keeps the status", intunesim.Fault{Kind: intunesim.FaultTextPlain}, 502, "", "not JSON (text/plain", false, false},
		{"HTML body keeps the status", intunesim.Fault{Kind: intunesim.FaultHTML}, 502, "", "not JSON (text/html", false, false},
		{"expired token", intunesim.Fault{Kind: intunesim.FaultExpiredToken}, 401, "InvalidAuthenticationToken", "expired", false, false},
		{"dropped connection", intunesim.Fault{Kind: intunesim.FaultDropBefore}, 0, "", "no response", true, true},
		{"call timeout", intunesim.Fault{Kind: intunesim.FaultLatency, Latency: 3 * time.Second}, 0, "", "timed out", true, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := win[i]
			tc.fault.Times = 1
			sim.InjectFault(d.ID, tc.fault)
			_, err := c.Trigger(context.Background(), intune.ManagedDevices, d.ID, sc)
			var ge *intune.Error
			require.True(t, errors.As(err, &ge), "%v", err)
			assert.Equal(t, tc.status, ge.Status)
			assert.Equal(t, tc.code, ge.Code)
			assert.Contains(t, strings.ToLower(ge.Message), strings.ToLower(tc.message))
			assert.Equal(t, tc.transport, ge.Transport)
			assert.Equal(t, tc.unavailable, ge.Unavailable())
			if tc.status != 0 {
				assert.NotEmpty(t, ge.RequestID)
			}
			assert.NotPanics(t, func() { _ = ge.Error() })
		})
	}
}

func TestNotFoundAndThrottled(t *testing.T) {
	c, _, tenant := setup(t, 60, intunesim.Options{WriteLimit: 2, Window: time.Minute, RetryAfter: intunesim.RetryAfterFractional})
	sc := tenant.RemediationScript().ID
	_, err := c.Trigger(context.Background(), intune.ManagedDevices, "11111111-1111-4111-8111-111111111111", sc)
	var ge *intune.Error
	require.ErrorAs(t, err, &ge)
	assert.Equal(t, 404, ge.Status)
	assert.Equal(t, "ResourceNotFound", ge.Code)
	assert.False(t, strings.HasPrefix(ge.Message, "{"), "Intune's JSON message is unwrapped: %s", ge.Message)
	assert.Contains(t, ge.Error(), "request-id")

	_, err = c.Trigger(context.Background(), intune.ManagedDevices, tenant.Windows(false)[0].ID, sc)
	require.NoError(t, err)
	_, err = c.Trigger(context.Background(), intune.ManagedDevices, tenant.Windows(false)[1].ID, sc)
	require.ErrorAs(t, err, &ge)
	assert.True(t, ge.Throttled())
	assert.Regexp(t, `^\d+\.\d+$`, ge.RetryAfter)
}

func TestDevicesBatch(t *testing.T) {
	c, sim, tenant := setup(t, 200, intunesim.Options{ReadLimit: 15, Window: time.Minute})
	win := tenant.Windows(false)
	ids := []string{"11111111-1111-4111-8111-111111111111"}
	for _, d := range win[:19] {
		ids = append(ids, d.ID)
	}
	res, err := c.Devices(context.Background(), ids)
	require.NoError(t, err)
	require.Len(t, res, 20)
	assert.Equal(t, 404, res[0].Err.Status)
	found, throttled := 0, 0
	for i, l := range res[1:] {
		assert.Equal(t, win[i].ID, l.ID)
		switch {
		case l.Device != nil:
			found++
			assert.Equal(t, win[i].DeviceName, l.Device.DeviceName)
			assert.Equal(t, "Windows", l.Device.OperatingSystem)
			assert.Equal(t, win[i].LastSyncDateTime, l.Device.LastSyncDateTime.UTC())
		case l.Err != nil && l.Err.Throttled():
			throttled++
			assert.NotEmpty(t, l.Err.RetryAfter, "the item's Retry-After is kept")
		}
	}
	assert.Equal(t, 14, found, "15 reads in the window, one of them the 404")
	assert.Equal(t, 5, throttled)
	assert.Equal(t, 1, sim.Counters().Batches)
	assert.EqualValues(t, 1, c.Calls(), "one HTTP request for 20 lookups")

	_, err = c.Devices(context.Background(), make([]string, 21))
	assert.Error(t, err)
}

func TestListDevicesPages(t *testing.T) {
	c, _, tenant := setup(t, 2300, intunesim.Options{})
	seen := map[string]bool{}
	next, pages := "", 0
	for {
		p, err := c.ListDevices(context.Background(), "operatingSystem eq 'Windows'", 1000, next)
		require.NoError(t, err)
		pages++
		assert.Equal(t, len(tenant.Windows(false)), p.Count)
		for _, d := range p.Devices {
			assert.Equal(t, "Windows", d.OperatingSystem)
			seen[d.ID] = true
		}
		if p.NextLink == "" {
			break
		}
		next = p.NextLink
	}
	assert.Len(t, seen, len(tenant.Windows(false)))
	assert.Equal(t, (len(seen)+999)/1000, pages)
}

func TestCleanMessage(t *testing.T) {
	assert.Equal(t, "plain", intune.CleanMessage("plain"))
	assert.Equal(t, "inner", intune.CleanMessage(`{"_version":3,"Message":"inner"}`))
	assert.Equal(t, "{broken", intune.CleanMessage("{broken"))
}

// tokens is a TokenSource whose credential rotates on Invalidate.
type tokens struct {
	current     string
	gen         uint64
	next        string
	invalidated int
}

func (s *tokens) Token(context.Context) (string, uint64, error) { return s.current, s.gen, nil }

func (s *tokens) Invalidate(_ context.Context, gen uint64) {
	if gen == s.gen {
		s.invalidated++
		s.current, s.gen = s.next, s.gen+1
	}
}

func (s *tokens) Prepare(ctx context.Context, _ string) (context.Context, error) { return ctx, nil }

// TestA401ReauthenticatesOnceOnly: the client sends a call once and marks
// a 401 with the generation of the credential whose token it sent; the
// engine's one retry loop drops that credential and sends the call once
// more, and a second 401 stands.
func TestA401ReauthenticatesOnceOnly(t *testing.T) {
	tenant := intunesim.Generate(5, intunesim.GenerateOptions{Devices: 50})
	sim, err := intunesim.Start(intunesim.New(tenant, intunesim.Options{Authorize: func(tok string) (string, bool) { return "app", tok == "new" }}), "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sim.Close() })
	src := &tokens{current: "old", gen: 1, next: "new"}
	c, err := New(Config{BaseURL: sim.URL, Tokens: src})
	require.NoError(t, err)
	d, sc := tenant.Windows(false)[0], tenant.RemediationScript().ID

	_, err = c.Trigger(context.Background(), intune.ManagedDevices, d.ID, sc)
	var ge *intune.Error
	require.ErrorAs(t, err, &ge)
	assert.Equal(t, 401, ge.Status)
	assert.Equal(t, uint64(1), ge.Credential, "the failure names the credential whose token was sent")
	require.Len(t, sim.Records(), 1, "the client sends a call once")
	sim.Reset()

	engine := remediate.New(c, pace.New(100, 100), remediate.Config{Credentials: src}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	plan := remediate.Plan{Items: []remediate.Item{{Collection: intune.ManagedDevices, DeviceID: d.ID, ScriptPolicyID: sc}}}
	s := engine.Complete(context.Background(), plan)
	require.Len(t, s.Devices, 1)
	assert.Equal(t, remediate.Succeeded, s.Devices[0].Outcome, "the 401 dropped the old credential and the retry succeeded")
	assert.Equal(t, 1, src.invalidated)
	recs := sim.Records()
	require.Len(t, recs, 2)
	assert.Equal(t, "Bearer old", recs[0].Header.Get("Authorization"))
	assert.Equal(t, []string{"Bearer new"}, recs[1].Header.Values("Authorization"), "the retry carries only the new token")
	sim.Reset()

	src.next = "newer" // also refused: the second 401 stands
	src.current = "stale"
	s = engine.Complete(context.Background(), plan)
	require.Len(t, s.Devices, 1)
	assert.Equal(t, remediate.Failed, s.Devices[0].Outcome)
	assert.Equal(t, 401, s.Devices[0].HTTPStatus)
	assert.Len(t, sim.Records(), 2, "one retry, no loop")

	// Tokens go only to the Graph host the client was built for.
	other, err := New(Config{BaseURL: "http://127.0.0.2:1/beta", Tokens: src})
	require.NoError(t, err)
	_, err = other.ListDevices(context.Background(), "", 1, sim.URL+"/deviceManagement/managedDevices")
	require.Error(t, err)
	last := sim.Records()[len(sim.Records())-1]
	assert.Empty(t, last.Header.Get("Authorization"), "a nextLink to another host gets no token")
}

func TestScriptAndGroupDevices(t *testing.T) {
	c, _, tenant := setup(t, 120, intunesim.Options{PageSize: 5})
	sc := tenant.RemediationScript()
	s, err := c.Script(context.Background(), sc.ID)
	require.NoError(t, err)
	assert.Equal(t, sc.DisplayName, s.DisplayName)
	assert.Equal(t, "deviceHealthScript", s.Type)
	assert.True(t, sc.LastModifiedDateTime.Equal(s.LastModifiedDateTime))
	_, err = c.Script(context.Background(), "11111111-1111-4111-8111-111111111111")
	var ge *intune.Error
	require.ErrorAs(t, err, &ge)
	assert.Equal(t, 404, ge.Status)

	g := tenant.Groups[0]
	var got []string
	next := ""
	for {
		p, err := c.GroupDevices(context.Background(), g.ID, next)
		require.NoError(t, err)
		for _, m := range p.Members {
			got = append(got, m.AzureADDeviceID)
		}
		if next = p.NextLink; next == "" {
			break
		}
	}
	assert.Equal(t, g.Members, got, "every page, in order")
	_, err = c.GroupDevices(context.Background(), "22222222-2222-4222-8222-222222222222", "")
	require.ErrorAs(t, err, &ge)
	assert.Equal(t, 404, ge.Status)
}
