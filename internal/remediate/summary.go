package remediate

import (
	"time"

	"github.com/remediator/remediator/internal/fault"
)

// Outcome is what happened to one device.
type Outcome string

// Device outcomes. Every device of a request gets exactly one.
const (
	Succeeded    Outcome = "succeeded"     // Graph accepted the trigger (204)
	Failed       Outcome = "failed"        // Graph refused it, or the answer was lost
	Skipped      Outcome = "skipped"       // not eligible (see Reason); nothing sent
	NotAttempted Outcome = "not_attempted" // not sent: deadline, cancellation or a rejected run
	Planned      Outcome = "planned"       // dry run: would be triggered
	// Pending is a device still to be triggered: by the engine, or by the
	// workers of an asynchronous run. Answers show it as not_attempted with
	// reason queued (DeviceResult.Answered).
	Pending Outcome = "pending"
)

// Reasons for skipped and not_attempted devices.
const (
	ReasonNotFound        = "not_found"
	ReasonNotWindows      = "not_windows"
	ReasonNotCoManaged    = "not_comanaged"
	ReasonEntraRegistered = "entra_registered"
	ReasonLookupFailed    = "lookup_failed"
	ReasonDeadline        = "deadline"
	// ReasonThrottled: the run's time ran out while Intune had the tenant
	// paused (a Retry-After, possibly capped by RETRY_AFTER_MAX); the
	// message says when the pause ends.
	ReasonThrottled      = "throttled"
	ReasonCanceled       = "canceled"
	ReasonRunRejected    = "run_rejected"
	ReasonNotManaged     = "not_managed"
	ReasonOutcomeUnknown = "outcome_unknown"
	ReasonStale          = "stale"
	ReasonCooldown       = "cooldown"
	ReasonQueued         = "queued" // the answer's form of Pending
	ReasonPoison         = "poison" // asynchronous run: its work item failed every delivery
	// ReasonScriptRefused: an asynchronous run's script was taken off
	// ALLOWED_SCRIPT_POLICY_IDS, or its pinned script changed, after the
	// run was accepted; its devices not yet triggered are not.
	ReasonScriptRefused = "script_refused"
	// ReasonCancelled: the run's caller cancelled the asynchronous run
	// before this device was triggered (canceled, above, is a run cut
	// short by the process shutting down).
	ReasonCancelled = "cancelled"
	// ReasonHalted: a rollout's gate halted the run before this device's
	// wave (resume goes on with it).
	ReasonHalted = "halted"
)

// Run statuses.
const (
	StatusSucceeded          = "succeeded"
	StatusPartiallySucceeded = "partially_succeeded"
	StatusFailed             = "failed"
	StatusPlanned            = "planned"
	StatusRejected           = "rejected"
	StatusAccepted           = "accepted"  // asynchronous run handed to workers
	StatusRunning            = "running"   // asynchronous run with devices left
	StatusCancelled          = "cancelled" // asynchronous run its caller cancelled, finished
	StatusHalted             = "halted"    // rollout stopped by a gate: resume or cancel it
)

// DeviceResult is one device's line in the summary.
type DeviceResult struct {
	DeviceID       string  `json:"device_id"`
	ScriptPolicyID string  `json:"script_policy_id"`
	Collection     string  `json:"collection"`
	DeviceName     string  `json:"device_name,omitempty"`
	Outcome        Outcome `json:"outcome"`
	Reason         string  `json:"reason,omitempty"`
	Message        string  `json:"message,omitempty"`
	HTTPStatus     int     `json:"http_status,omitempty"`
	ErrorCode      string  `json:"error_code,omitempty"`
	RequestID      string  `json:"request_id,omitempty"`
	Attempts       int     `json:"attempts"`
	// TriggeredAt is when Intune accepted the trigger (asynchronous runs).
	TriggeredAt time.Time `json:"triggered_at,omitzero"`
	// FollowUp is what the scripts did on the device, when asked for
	// (GET runs/{id}?follow=true).
	FollowUp *FollowUp `json:"follow_up,omitempty"`
}

// Counts add up: Total is the sum of the others.
type Counts struct {
	Total        int `json:"total"`
	Succeeded    int `json:"succeeded"`
	Failed       int `json:"failed"`
	Skipped      int `json:"skipped"`
	NotAttempted int `json:"not_attempted"`
	Planned      int `json:"planned,omitempty"`
}

// Throttling reports how much Graph pushed back.
type Throttling struct {
	ThrottledResponses int   `json:"throttled_responses"`
	WaitedMS           int64 `json:"waited_ms"`
	// RetryAfterCapped counts the Retry-After values Graph sent that were
	// longer than RETRY_AFTER_MAX and were taken as the cap.
	RetryAfterCapped int `json:"retry_after_capped,omitempty"`
}

// ErrorInfo explains a rejected run.
type ErrorInfo struct {
	Code    fault.Code         `json:"code"`
	Message string             `json:"message"`
	Details []fault.FieldError `json:"details,omitempty"`
}

// ScriptInfo describes a script a run uses.
type ScriptInfo struct {
	ID                   string    `json:"id"`
	DisplayName          string    `json:"display_name"`
	Version              string    `json:"version,omitempty"`
	LastModifiedDateTime time.Time `json:"last_modified_date_time"`
}

// Summary is the account of a run: the response body of every trigger.
type Summary struct {
	RunID      string         `json:"run_id"`
	Status     string         `json:"status"`
	DryRun     bool           `json:"dry_run"`
	Counts     Counts         `json:"counts"`
	Devices    []DeviceResult `json:"devices"`
	Throttling Throttling     `json:"throttling"`
	Warnings   []string       `json:"warnings"`
	Error      *ErrorInfo     `json:"error,omitempty"`
	// Scripts are the scripts the run uses, as Intune describes them.
	Scripts []ScriptInfo `json:"scripts,omitempty"`
	// OmittedDevices is how many devices that succeeded (or are planned)
	// an answer left out to fit its size bound; Counts still cover them.
	OmittedDevices int `json:"omitted_devices,omitempty"`
	// ResolvedDeviceCount is how many devices the run triggers (or, dry,
	// would trigger): the number confirm_device_count must repeat.
	ResolvedDeviceCount int `json:"resolved_device_count"`
	// EstimatedDurationMS is how long the triggers take at the configured
	// write pace, estimated before the first one (it decides mode auto).
	EstimatedDurationMS int64     `json:"estimated_duration_ms,omitempty"`
	StartedAt           time.Time `json:"started_at"`
	FinishedAt          time.Time `json:"finished_at"`
	DurationMS          int64     `json:"duration_ms"`
	// Rollout is the run's waves and their gates, for a rollout.
	Rollout *RolloutStatus `json:"rollout,omitempty"`

	// IgnorePartialFailures is the request's setting, kept for choosing
	// the HTTP status.
	IgnorePartialFailures bool `json:"-"`
}

// Add counts one device with outcome o (Pending counts as not
// attempted, as answers show it).
func (c *Counts) Add(o Outcome) {
	c.Total++
	switch o {
	case Succeeded:
		c.Succeeded++
	case Failed:
		c.Failed++
	case Skipped:
		c.Skipped++
	case NotAttempted, Pending:
		c.NotAttempted++
	case Planned:
		c.Planned++
	}
}

// Merge adds b's counts to c.
func (c *Counts) Merge(b Counts) {
	c.Total += b.Total
	c.Succeeded += b.Succeeded
	c.Failed += b.Failed
	c.Skipped += b.Skipped
	c.NotAttempted += b.NotAttempted
	c.Planned += b.Planned
}

// Status is the status of a finished run with these counts: succeeded
// when nothing failed or was left, partially_succeeded when some devices
// succeeded, else failed.
func (c Counts) Status() string {
	switch {
	case c.Failed+c.NotAttempted == 0:
		return StatusSucceeded
	case c.Succeeded > 0:
		return StatusPartiallySucceeded
	}
	return StatusFailed
}

// count is the number of devices with outcome o.
func (s *Summary) count(o Outcome) int {
	n := 0
	for _, d := range s.Devices {
		if d.Outcome == o {
			n++
		}
	}
	return n
}

// tally counts the outcomes and sets the status of a finished run.
func (s *Summary) tally() {
	var c Counts
	for _, d := range s.Devices {
		c.Add(d.Outcome)
	}
	s.Counts = c
	switch s.Status {
	case StatusRejected, StatusPlanned, StatusAccepted, StatusRunning:
	default:
		s.Status = c.Status()
	}
	if s.Warnings == nil {
		s.Warnings = []string{}
	}
}

// Answered is d as answers show it: a Pending device is not_attempted
// with reason queued.
func (d DeviceResult) Answered() DeviceResult {
	if d.Outcome == Pending {
		d.Outcome, d.Reason = NotAttempted, ReasonQueued
	}
	return d
}
