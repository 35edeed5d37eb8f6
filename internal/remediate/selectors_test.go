package remediate

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intunesim"
)

// TestSelectorsAreBounded: a request's targets, names and groups are
// capped (MAX_TARGETS, MAX_DEVICE_NAMES, MAX_GROUP_IDS), each a 400 naming
// where the request went past it.
func TestSelectorsAreBounded(t *testing.T) {
	t.Parallel()
	script := "a85696b5-3b72-442f-b948-8cb432a00b33"
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("%q", fmt.Sprintf("PC-%05d", i))
	}
	targets := make([]string, 5000)
	for i := range targets {
		targets[i] = `{"script_policy_id":"` + script + `","device_names":["PC-1"]}`
	}
	groups := make([]string, 21)
	for i := range groups {
		groups[i] = fmt.Sprintf(`"00000000-0000-4000-8000-%012d"`, i)
	}
	for body, want := range map[string]string{
		sel(script, `"device_names":[`+strings.Join(names, ",")+`]`): "targets[0].device_names",
		`{"targets":[` + strings.Join(targets, ",") + `]}`:           "targets[20]",
		sel(script, `"group_ids":[`+strings.Join(groups, ",")+`]`):   "targets[0].group_ids",
	} {
		req, err := Decode(strings.NewReader(body))
		require.NoError(t, err)
		_, err = Validate(req, Limits{})
		var ie *fault.Error
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, want, ie.Details[0].Field)
		assert.Regexp(t, `MAX_(TARGETS|DEVICE_NAMES|GROUP_IDS)`, ie.Details[0].Message)
	}
	req, err := Decode(strings.NewReader(sel(script, `"device_names":[`+strings.Join(names[:40], ",")+`]`)))
	require.NoError(t, err)
	_, err = Validate(req, Limits{MaxDeviceNames: 39})
	assert.Error(t, err, "the caps are settings")
	_, err = Validate(req, Limits{MaxDeviceNames: 40})
	assert.NoError(t, err)
}

// TestGroupMembersCountAgainstMaxListed: a group of 300,000 members is read
// only until MAX_LISTED_DEVICES, its pages counted like the device list's,
// and nothing is triggered.
func TestGroupMembersCountAgainstMaxListed(t *testing.T) {
	t.Parallel()
	tenant := intunesim.Generate(77, intunesim.GenerateOptions{Devices: 200})
	huge := intunesim.Group{ID: "6d0f7b6e-0000-4000-8000-000000300000", DisplayName: "Everyone's devices"}
	for i := range 300_000 {
		huge.Members = append(huge.Members, fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
	}
	tenant.Groups = append(tenant.Groups, huge)
	f := newFixtureFor(t, tenant, intunesim.Options{}, 5000)
	f.engine.cfg.MaxListed = 5000
	s := f.engine.Complete(context.Background(), targetPlan(t, sel(f.script, `"group_ids":["`+huge.ID+`"]`)))
	assert.Equal(t, StatusRejected, s.Status)
	require.NotNil(t, s.Error)
	assert.Contains(t, s.Error.Details[0].Message, "MAX_LISTED_DEVICES")
	assert.Zero(t, f.sim.Counters().Triggers)
	pages := 0
	for _, r := range f.sim.Records() {
		if strings.Contains(r.Path, "/transitiveMembers") {
			pages++
		}
	}
	assert.Less(t, pages, 60, "the member pages stop near 5,000 members, not at 300,000")
}

// TestCallerCapBoundsResolution: a caller held to a few devices by
// CALLER_POLICY resolves at most a page past them, a dry run too, and is
// refused with caller_not_allowed and the count it reached; a run under
// MAX_DEVICES_PER_RUN stops one device past it.
func TestCallerCapBoundsResolution(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3000, intunesim.Options{}, 5000)
	for _, dry := range []bool{true, false} {
		p := targetPlan(t, sel(f.script, `"filter":"operatingSystem eq 'Windows'"`))
		p.DryRun, p.MaxDevices, p.CapName = dry, 3, "the max_devices of caller key:0123456789ab in CALLER_POLICY"
		before := len(f.sim.Records())
		s := f.engine.Complete(context.Background(), p)
		require.NotNil(t, s.Error, "dry run %v", dry)
		assert.Equal(t, fault.CallerNotAllowed, s.Error.Code)
		assert.Contains(t, s.Error.Message, "key:0123456789ab")
		assert.Contains(t, s.Error.Message, "resolving stopped at 4")
		listed := 0
		for _, r := range f.sim.Records()[before:] {
			if strings.HasSuffix(r.Path, "/managedDevices") && r.Method == "GET" {
				q, _ := url.ParseQuery(r.RawQuery)
				assert.Equal(t, "100", q.Get("$top"), "small pages for a small cap")
				listed++
			}
		}
		assert.LessOrEqual(t, listed, 2, "a page or two, not the fleet")
	}

	// The deployment's cap: a real run stops one device past it; a dry run
	// counts past it, to report the number.
	f.engine.cfg.MaxDevices = 10
	s := f.engine.Complete(context.Background(), targetPlan(t, sel(f.script, `"filter":"operatingSystem eq 'Windows'"`)))
	require.NotNil(t, s.Error)
	assert.Equal(t, fault.TooManyDevices, s.Error.Code)
	p := targetPlan(t, sel(f.script, `"filter":"operatingSystem eq 'Windows'"`))
	p.DryRun = true
	s = f.engine.Complete(context.Background(), p)
	assert.Greater(t, s.ResolvedDeviceCount, 10)
	assert.Zero(t, f.sim.Counters().Triggers)
}
