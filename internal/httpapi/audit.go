package httpapi

import "github.com/remediator/remediator/internal/remediate"

// maxLoggedRequestIDs bounds the failed devices' Graph request ids in one
// audit line.
const maxLoggedRequestIDs = 50

// AuditAttrs are the slog attributes that describe an answer in the
// per-invocation audit line: the run, its scripts, counts and the
// Graph request ids of failed devices (the ids Microsoft support asks
// for), or the error code of a refusal. Nothing secret is in an answer, so
// nothing secret is here.
func AuditAttrs(body any) []any {
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
		return []any{"run_id", b.RunID, "status", b.Status, "dry_run", b.DryRun, "script_ids", scriptIDs,
			"total", b.Counts.Total, "succeeded", b.Counts.Succeeded, "failed", b.Counts.Failed,
			"skipped", b.Counts.Skipped, "not_attempted", b.Counts.NotAttempted,
			"throttled", b.Throttling.ThrottledResponses, "failed_request_ids", failed}
	case Accepted:
		return []any{"run_id", b.RunID, "status", b.Status, "resolved", b.ResolvedDeviceCount, "queued", b.Queued}
	case RunPage:
		return append([]any{"page", b.Page}, AuditAttrs(b.Summary)...)
	case Running:
		return []any{"run_id", b.RunID, "status", b.Status, "queued", b.Queued}
	case ErrorResponse:
		return []any{"error_code", b.Error.Code}
	case map[string]string:
		return []any{"status", b["status"]}
	}
	return nil
}
