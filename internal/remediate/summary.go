package remediate

import "time"

// Outcome is what happened to one device.
type Outcome string

// Device outcomes. Every device of a request gets exactly one.
const (
	Succeeded    Outcome = "succeeded"     // Graph accepted the trigger (204)
	Failed       Outcome = "failed"        // Graph refused it, or the answer was lost
	Skipped      Outcome = "skipped"       // not eligible (see Reason); nothing sent
	NotAttempted Outcome = "not_attempted" // not sent: deadline, cancellation or a rejected run
	Planned      Outcome = "planned"       // dry run: would be triggered
)

// Reasons for skipped and not_attempted devices.
const (
	ReasonNotFound        = "not_found"
	ReasonNotWindows      = "not_windows"
	ReasonNotCoManaged    = "not_comanaged"
	ReasonEntraRegistered = "entra_registered"
	ReasonLookupFailed    = "lookup_failed"
	ReasonDeadline        = "deadline"
	ReasonCanceled        = "canceled"
	ReasonRunRejected     = "run_rejected"
	ReasonMayHaveApplied  = "outcome_unknown"
	ReasonStale           = "stale"
	ReasonCooldown        = "cooldown"
	ReasonQueued          = "queued" // asynchronous run: waiting for a worker
	ReasonPoison          = "poison" // asynchronous run: its work item failed every delivery
)

// Run statuses.
const (
	StatusSucceeded          = "succeeded"
	StatusPartiallySucceeded = "partially_succeeded"
	StatusFailed             = "failed"
	StatusPlanned            = "planned"
	StatusRejected           = "rejected"
	StatusAccepted           = "accepted" // asynchronous run handed to workers
	StatusRunning            = "running"  // asynchronous run with devices left
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
}

// ErrorInfo explains a rejected run.
type ErrorInfo struct {
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Details []FieldError `json:"details,omitempty"`
	// status is the HTTP status of the rejection (default 422).
	status int
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
	// ResolvedDeviceCount is how many devices the run triggers (or, dry,
	// would trigger): the number confirm_device_count must repeat.
	ResolvedDeviceCount int `json:"resolved_device_count"`
	// EstimatedDurationMS is how long the triggers take at the configured
	// write pace, estimated before the first one (it decides mode auto).
	EstimatedDurationMS int64     `json:"estimated_duration_ms,omitempty"`
	StartedAt           time.Time `json:"started_at"`
	FinishedAt          time.Time `json:"finished_at"`
	DurationMS          int64     `json:"duration_ms"`

	// IgnorePartialFailures is the request's setting, kept for choosing
	// the HTTP status.
	IgnorePartialFailures bool `json:"-"`
}

// tally counts the outcomes and sets the run status.
func (s *Summary) tally() {
	c := Counts{Total: len(s.Devices)}
	for _, d := range s.Devices {
		switch d.Outcome {
		case Succeeded:
			c.Succeeded++
		case Failed:
			c.Failed++
		case Skipped:
			c.Skipped++
		case NotAttempted:
			c.NotAttempted++
		case Planned:
			c.Planned++
		}
	}
	s.Counts = c
	switch {
	case s.Status == StatusRejected || s.Status == StatusPlanned || s.Status == StatusAccepted || s.Status == StatusRunning:
	case c.Failed+c.NotAttempted == 0:
		s.Status = StatusSucceeded
	case c.Succeeded > 0:
		s.Status = StatusPartiallySucceeded
	default:
		s.Status = StatusFailed
	}
	if s.Warnings == nil {
		s.Warnings = []string{}
	}
}

// HTTPStatus is the status code a synchronous answer carries: 422 for a
// rejected run, 424 when a device failed or was not attempted and partial
// failures are not ignored, else 200. Per-device failures are never a 5xx:
// callers such as Logic Apps retry 5xx and would trigger devices again.
func (s *Summary) HTTPStatus() int {
	switch {
	case s.Status == StatusRejected && s.Error != nil && s.Error.status != 0:
		return s.Error.status
	case s.Status == StatusRejected:
		return 422
	case s.Status == StatusPlanned:
		return 200
	case s.Counts.Failed+s.Counts.NotAttempted > 0 && !s.IgnorePartialFailures:
		return 424
	}
	return 200
}
