package graph

import (
	"encoding/json"
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
	// Transport is true when no response arrived (connection refused or
	// dropped, call timeout): a write may or may not have taken effect.
	Transport bool
	err       error
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

// Unwrap returns the SDK's error.
func (e *Error) Unwrap() error { return e.err }

// Throttled reports a 429.
func (e *Error) Throttled() bool { return e.Status == 429 }

// Unavailable reports a 503 or 504 or a lost response: worth a retry, but
// a write may already have taken effect.
func (e *Error) Unavailable() bool {
	return e.Transport || e.Status == 503 || e.Status == 504
}

// cleanMessage unwraps Intune's error messages that are themselves JSON
// documents ({"_version":3,"Message":"..."}), keeping the inner message.
func cleanMessage(m string) string {
	t := strings.TrimSpace(m)
	if !strings.HasPrefix(t, "{") {
		return m
	}
	var inner struct {
		Message string `json:"Message"`
	}
	if json.Unmarshal([]byte(t), &inner) != nil || inner.Message == "" {
		return m
	}
	return inner.Message
}

// errorBody is the JSON shape of a Graph error.
type errorBody struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError struct {
			RequestID string `json:"request-id"`
		} `json:"innerError"`
	} `json:"error"`
}

// itemError builds an *Error from a $batch item's status, headers and
// body.
func itemError(status int, headers map[string]string, body []byte) *Error {
	e := &Error{Status: status}
	for k, v := range headers {
		switch strings.ToLower(k) {
		case "request-id":
			e.RequestID = v
		case "client-request-id":
			e.ClientRequestID = v
		case "retry-after":
			e.RetryAfter = v
		}
	}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil {
		e.Code = eb.Error.Code
		e.Message = cleanMessage(eb.Error.Message)
		if e.RequestID == "" {
			e.RequestID = eb.Error.InnerError.RequestID
		}
	}
	if e.Message == "" {
		e.Message = "error response without a message"
	}
	return e
}
