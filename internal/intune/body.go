package intune

import (
	"encoding/json"
	"strings"
)

// CleanMessage unwraps Intune's error messages that are themselves JSON
// documents ({"_version":3,"Message":"..."}), keeping the inner message.
func CleanMessage(m string) string {
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

// ItemError builds an *Error from a $batch item's status, headers and
// body (or from any Graph error answer's).
func ItemError(status int, headers map[string]string, body []byte) *Error {
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
		e.Message = CleanMessage(eb.Error.Message)
		if e.RequestID == "" {
			e.RequestID = eb.Error.InnerError.RequestID
		}
	}
	if e.Message == "" {
		e.Message = "error response without a message"
	}
	return e
}

// ErrorBody reads a Graph error body's code and message, if it is one.
func ErrorBody(b []byte) (code, message string) {
	var eb errorBody
	if json.Unmarshal(b, &eb) != nil {
		return "", ""
	}
	return eb.Error.Code, CleanMessage(eb.Error.Message)
}
