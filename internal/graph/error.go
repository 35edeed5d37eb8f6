package graph

import (
	"encoding/json"
	"strings"

	"github.com/remediator/remediator/internal/intune"
)

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

// itemError builds an *intune.Error from a $batch item's status, headers and
// body.
func itemError(status int, headers map[string]string, body []byte) *intune.Error {
	e := &intune.Error{Status: status}
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
