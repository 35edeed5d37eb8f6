package azure

import (
	"fmt"
	"time"

	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/remediate"
)

// audit writes the one structured line per invocation: who called which
// function and how it ended (see httpapi.AuditAttrs). It never logs
// headers, keys, URLs or bodies.
func (h *Host) audit(function, invocation, caller string, status int, body any, started time.Time, extra ...any) {
	attrs := []any{"invocation_id", invocation, "function", function, "caller", caller,
		"http_status", status, "duration_ms", time.Since(started).Milliseconds()}
	h.log.Info("invocation", append(append(attrs, httpapi.AuditAttrs(body)...), extra...)...)
}

// line is a one-line account of an answer, for the host's invocation log.
func line(status int, body any) string {
	if s, ok := body.(*remediate.Summary); ok {
		return fmt.Sprintf("remediator run %s %s (HTTP %d): %d devices, %d succeeded, %d failed, %d skipped, %d not attempted",
			s.RunID, s.Status, status, s.Counts.Total, s.Counts.Succeeded, s.Counts.Failed, s.Counts.Skipped, s.Counts.NotAttempted)
	}
	if a, ok := body.(httpapi.Accepted); ok {
		return fmt.Sprintf("remediator run %s accepted (HTTP %d): %d devices queued for workers; status at %s", a.RunID, status, a.Queued, a.StatusURL)
	}
	if e, ok := body.(httpapi.ErrorResponse); ok {
		return fmt.Sprintf("remediator refused the request (HTTP %d, %s): %s", status, e.Error.Code, e.Error.Message)
	}
	return fmt.Sprintf("remediator answered HTTP %d", status)
}
