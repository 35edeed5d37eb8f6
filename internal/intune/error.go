package intune

import (
	"fmt"
	"strings"
)

// Error is a failed Graph call: the HTTP status (0 when no response
// arrived), Graph's error code and message, and the ids Microsoft support
// asks for. Read it with errors.As.
type Error struct {
	Status          int
	Code            string
	Message         string
	RequestID       string
	ClientRequestID string
	// RetryAfter is the raw Retry-After header, if any.
	RetryAfter string
	// Credential is the generation of the credential whose token the call
	// sent (0: none): a 401's retry drops that credential first.
	Credential uint64
	// Transport is true when no response arrived (connection refused or
	// dropped, call timeout): a write may or may not have taken effect.
	Transport bool
	// Err is the underlying error, if any (the SDK's, the transport's).
	Err error
}

// Error is a one-line description safe to show to callers: it holds no
// token or secret, only what Graph said.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("graph: ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "%d ", e.Status)
	}
	if e.Code != "" {
		b.WriteString(e.Code + ": ")
	}
	b.WriteString(e.Message)
	if e.RequestID != "" {
		b.WriteString(" (request-id " + e.RequestID + ")")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Throttled reports a 429.
func (e *Error) Throttled() bool { return e.Status == 429 }

// Unavailable reports a 503 or 504 or a lost response: worth a retry, but
// a write may already have taken effect.
func (e *Error) Unavailable() bool {
	return e.Transport || e.Status == 503 || e.Status == 504
}

// ServerSide reports any 5xx or a lost response: a read may be retried.
func (e *Error) ServerSide() bool { return e.Transport || e.Status >= 500 }
