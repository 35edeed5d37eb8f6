package azure

import (
	"fmt"
	"time"

	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/remediate"
)

// maxLoggedRequestIDs bounds the failed devices' Graph request ids in one
// audit line.
const maxLoggedRequestIDs = 50

// audit writes the one structured line per invocation: who called which
// function, what ran, how it ended, and the Graph request ids of failures
// for Microsoft support. It never logs headers, keys, URLs or bodies.
func (h *Host) audit(function, invocation, caller string, status int, body any, started time.Time, extra ...any) {
	attrs := []any{"invocation_id", invocation, "function", function, "caller", caller,
		"http_status", status, "duration_ms", time.Since(started).Milliseconds()}
	switch b := body.(type) {
	case *remediate.Summary:
		scripts := map[string]bool{}
		var scriptIDs, failed []string
		for _, d := range b.Devices {
			if !scripts[d.ScriptPolicyID] {
				scripts[d.ScriptPolicyID] = true
				scriptIDs = append(scriptIDs, d.ScriptPolicyID)
			}
			if d.Outcome == remediate.Failed && d.RequestID != "" && len(failed) < maxLoggedRequestIDs {
				failed = append(failed, d.RequestID)
			}
		}
		attrs = append(attrs, "run_id", b.RunID, "status", b.Status, "dry_run", b.DryRun, "script_ids", scriptIDs,
			"total", b.Counts.Total, "succeeded", b.Counts.Succeeded, "failed", b.Counts.Failed,
			"skipped", b.Counts.Skipped, "not_attempted", b.Counts.NotAttempted,
			"throttled", b.Throttling.ThrottledResponses, "failed_request_ids", failed)
	case httpapi.ErrorResponse:
		attrs = append(attrs, "error_code", b.Error.Code)
	case map[string]string:
		attrs = append(attrs, "status", b["status"])
	}
	h.log.Info("invocation", append(attrs, extra...)...)
}

// line is a one-line account of an answer, for the host's invocation log.
func line(status int, body any) string {
	if s, ok := body.(*remediate.Summary); ok {
		return fmt.Sprintf("remediator run %s %s (HTTP %d): %d devices, %d succeeded, %d failed, %d skipped, %d not attempted",
			s.RunID, s.Status, status, s.Counts.Total, s.Counts.Succeeded, s.Counts.Failed, s.Counts.Skipped, s.Counts.NotAttempted)
	}
	if e, ok := body.(httpapi.ErrorResponse); ok {
		return fmt.Sprintf("remediator refused the request (HTTP %d, %s): %s", status, e.Error.Code, e.Error.Message)
	}
	return fmt.Sprintf("remediator answered HTTP %d", status)
}
