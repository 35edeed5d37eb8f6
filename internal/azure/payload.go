package azure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// envelope is the body the Functions host posts in payload mode:
// {"Data":{"<binding>":...},"Metadata":{...}}.
type envelope struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// binding returns Data[name], or the only entry of Data when the binding
// has another name.
func (e envelope) binding(name string) (json.RawMessage, bool) {
	if v, ok := e.Data[name]; ok {
		return v, true
	}
	if len(e.Data) == 1 {
		for _, v := range e.Data {
			return v, true
		}
	}
	return nil, false
}

// hostRequest is Data.req of an HTTP trigger in payload mode. Query is an
// object in real captures but a string ("{}") in the docs; header values
// are arrays in Data.req and plain strings in Metadata: both are accepted.
type hostRequest struct {
	URL     string    `json:"Url"`
	Method  string    `json:"Method"`
	Body    *string   `json:"Body"`
	Query   lenientKV `json:"Query"`
	Headers lenientKV `json:"Headers"`
	Params  lenientKV `json:"Params"`
}

// lenientKV is a string map that also reads arrays of strings (joined with
// ",") and a JSON-encoded object given as a string.
type lenientKV map[string]string

// UnmarshalJSON implements json.Unmarshaler.
func (kv *lenientKV) UnmarshalJSON(b []byte) error {
	*kv = lenientKV{}
	var s string
	if json.Unmarshal(b, &s) == nil {
		if strings.TrimSpace(s) == "" {
			return nil
		}
		b = []byte(s)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
			return nil
		}
		return err
	}
	for k, v := range raw {
		var one string
		var many []string
		switch {
		case json.Unmarshal(v, &one) == nil:
			(*kv)[k] = one
		case json.Unmarshal(v, &many) == nil:
			(*kv)[k] = strings.Join(many, ",")
		}
	}
	return nil
}

// get reads a key case-insensitively, as HTTP header names are.
func (kv lenientKV) get(name string) string {
	for k, v := range kv {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// httpOutput is Outputs.res: the HTTP answer the host gives the caller.
type httpOutput struct {
	StatusCode int               `json:"statusCode"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
}

// invokeResponse is what the worker answers the host in payload mode.
type invokeResponse struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

func writeInvokeResponse(w http.ResponseWriter, resp invokeResponse) {
	if resp.Logs == nil {
		resp.Logs = []string{}
	}
	if resp.Outputs == nil {
		resp.Outputs = map[string]any{}
	}
	b, err := json.Marshal(resp)
	if err != nil {
		b = []byte(`{"Outputs":{},"Logs":["remediator: the answer could not be encoded"],"ReturnValue":null}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK) // any other status makes the host fail the invocation
	_, _ = w.Write(b)
}

// timerInfo is Data.<timer> of a timer trigger; only what is logged.
type timerInfo struct {
	IsPastDue      bool `json:"IsPastDue"`
	ScheduleStatus *struct {
		Last lenientTime `json:"Last"`
		Next lenientTime `json:"Next"`
	} `json:"ScheduleStatus"`
}

// lenientTime reads the timestamps the host sends: with or without an
// offset, with up to seven fractional digits.
type lenientTime struct{ time.Time }

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999", "2006-01-02T15:04:05"}

// UnmarshalJSON implements json.Unmarshaler; an unreadable time is zero,
// never an error: a timer must not fail over a timestamp it only logs.
func (t *lenientTime) UnmarshalJSON(b []byte) error {
	var s string
	_ = json.Unmarshal(b, &s) // not a string: the time stays zero
	for _, layout := range timeLayouts {
		if v, err := time.Parse(layout, s); s != "" && err == nil {
			t.Time = v
			return nil
		}
	}
	return nil
}

// decodeTimer reads the timer binding, which may also arrive as a JSON
// string.
func decodeTimer(raw json.RawMessage) (timerInfo, error) {
	var ti timerInfo
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = json.RawMessage(s)
	}
	if err := json.Unmarshal(raw, &ti); err != nil {
		return timerInfo{}, fmt.Errorf("reading the timer binding: %w", err)
	}
	return ti, nil
}
