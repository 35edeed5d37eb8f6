package remediate

import (
	"context"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/intune"
)

// FollowUp is what a triggered device's scripts did, read back from
// Intune's run states.
type FollowUp struct {
	// State is pending until Intune reports a run newer than the trigger,
	// then no_issue, remediated, remediation_failed or script_error.
	State                   string    `json:"state"`
	DetectionState          string    `json:"detection_state,omitempty"`
	RemediationState        string    `json:"remediation_state,omitempty"`
	Output                  string    `json:"output,omitempty"`
	Error                   string    `json:"error,omitempty"`
	LastStateUpdateDateTime time.Time `json:"last_state_update_date_time,omitzero"`
}

// Follow-up states.
const (
	FollowPending           = "pending"
	FollowNoIssue           = "no_issue"
	FollowRemediated        = "remediated"
	FollowRemediationFailed = "remediation_failed"
	FollowScriptError       = "script_error"
)

// maxOutput is Intune's own cap on script output.
const maxOutput = 2048

// FollowUpOf interprets a run state for a trigger sent at triggered: a
// state not updated since is still pending.
func FollowUpOf(st intune.RunState, triggered time.Time) FollowUp {
	f := FollowUp{State: FollowPending, LastStateUpdateDateTime: st.LastStateUpdateDateTime}
	if !st.LastStateUpdateDateTime.After(triggered) {
		return f
	}
	f.DetectionState, f.RemediationState = st.DetectionState, st.RemediationState
	det, rem := strings.ToLower(st.DetectionState), strings.ToLower(st.RemediationState)
	switch {
	case det == "scripterror" || rem == "scripterror":
		f.State = FollowScriptError
		f.Error = firstNonEmpty(st.PreRemediationDetectionScriptError, st.RemediationScriptError, st.PostRemediationDetectionScriptError)
	case rem == "remediationfailed":
		f.State = FollowRemediationFailed
		f.Error = firstNonEmpty(st.RemediationScriptError, st.PostRemediationDetectionScriptError)
	case det == "fail" && rem == "success":
		f.State = FollowRemediated
		f.Output = firstNonEmpty(st.PostRemediationDetectionScriptOutput, st.PreRemediationDetectionScriptOutput)
	case det == "success":
		f.State = FollowNoIssue
		f.Output = st.PreRemediationDetectionScriptOutput
	default:
		f.State = FollowPending
	}
	f.Output, f.Error = clip(f.Output), clip(f.Error)
	return f
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func clip(s string) string {
	if len(s) > maxOutput {
		return s[:maxOutput]
	}
	return s
}

// RunStates reads a script's run states in tenant, paced and retried like every
// read, calling each for every page until it returns false. It returns the
// error that stopped it early, if any.
func (e *Engine) RunStates(ctx context.Context, tenant, scriptID string, each func([]intune.RunState) bool) error {
	x := e.newExecution(ctx, time.Now(), 0, tenant)
	defer x.cancel()
	return eachPage(x, func(ctx context.Context, next string) ([]intune.RunState, string, error) {
		p, err := e.graph.RunStates(ctx, scriptID, next)
		return p.States, p.NextLink, err
	}, each)
}

// Lookup reads devices of tenant by id ($batch, paced and retried): the devices
// found, and the errors of those that were not.
func (e *Engine) Lookup(ctx context.Context, tenant string, ids []string) (map[string]*intune.Device, map[string]*intune.Error) {
	x := e.newExecution(ctx, time.Now(), 0, tenant)
	defer x.cancel()
	found, errs := map[string]*intune.Device{}, map[string]*intune.Error{}
	x.batchLookup(ids, found, errs)
	return found, errs
}
