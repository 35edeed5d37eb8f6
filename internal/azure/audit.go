package azure

import (
	"fmt"

	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/remediate"
)

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
