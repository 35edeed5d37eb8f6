package intunesim

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"
)

const maxBody = 4 << 20

// readBody returns the request body, gunzipped when it is labelled gzip. A
// body labelled gzip that is not gzip is an error unless lenient.
func readBody(r *http.Request, lenient bool) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	if !strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") || len(raw) == 0 {
		return raw, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err == nil {
		var plain []byte
		plain, err = io.ReadAll(io.LimitReader(zr, maxBody))
		if err == nil {
			return plain, nil
		}
	}
	if lenient {
		return raw, nil
	}
	return nil, errors.New("the body is labelled Content-Encoding: gzip but is not gzip")
}

// writeJSON writes v with the headers every Graph response carries.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"InternalError","message":"marshal"}}`)
	}
	setRequestIDs(w, r)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// setRequestIDs sets request-id and client-request-id headers (echoing the
// caller's client-request-id) and returns them.
func setRequestIDs(w http.ResponseWriter, r *http.Request) (requestID, clientRequestID string) {
	if id := w.Header().Get("request-id"); id != "" {
		return id, w.Header().Get("client-request-id")
	}
	requestID = newID()
	clientRequestID = r.Header.Get("client-request-id")
	if clientRequestID == "" {
		clientRequestID = requestID
	}
	w.Header().Set("request-id", requestID)
	w.Header().Set("client-request-id", clientRequestID)
	w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
	return requestID, clientRequestID
}

type innerError struct {
	Date            string `json:"date"`
	RequestID       string `json:"request-id"`
	ClientRequestID string `json:"client-request-id"`
}

type graphError struct {
	Code       string     `json:"code"`
	Message    string     `json:"message"`
	InnerError innerError `json:"innerError"`
}

// writeError writes a Graph error body {"error":{code,message,innerError}}.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	rid, crid := setRequestIDs(w, r)
	writeJSON(w, r, status, map[string]graphError{"error": {
		Code:    code,
		Message: message,
		InnerError: innerError{
			Date:            time.Now().UTC().Format("2006-01-02T15:04:05"),
			RequestID:       rid,
			ClientRequestID: crid,
		},
	}})
}

// writeIntuneError writes the Intune variant whose message is itself a JSON
// document.
func writeIntuneError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	inner, _ := json.MarshalIndent(map[string]any{
		"_version":             3,
		"Message":              message + " - Operation ID (for customer support): 00000000-0000-0000-0000-000000000000 - Activity ID: " + newID() + " - Url: https://fef.msua04.manage.microsoft.com/DeviceFE/StatelessDeviceFEService" + r.URL.Path + "?api-version=2018-05-24",
		"CustomApiErrorPhrase": "",
		"RetryAfter":           nil,
		"ErrorSourceService":   "",
		"HttpHeaders":          "{}",
	}, "", "  ")
	writeError(w, r, status, code, strings.ReplaceAll(string(inner), "\n", "\r\n"))
}

// writeThrottled answers 429 in the requested Retry-After style. Without a
// header the body is the Intune form; with one it is the documented Graph
// form.
func writeThrottled(w http.ResponseWriter, r *http.Request, mode RetryAfterMode, wait time.Duration) {
	switch mode {
	case RetryAfterNone:
		writeIntuneError(w, r, http.StatusTooManyRequests, "TooManyRequests", "An error has occurred.")
		return
	case RetryAfterFractional:
		w.Header().Set("Retry-After", fmt.Sprintf("%.3f", math.Max(wait.Seconds(), 0.001)))
	default:
		w.Header().Set("Retry-After", fmt.Sprintf("%d", int(math.Max(math.Ceil(wait.Seconds()), 1))))
	}
	writeError(w, r, http.StatusTooManyRequests, "TooManyRequests", "Please retry again later.")
}

// batchAbortKey marks a $batch item's context; a dropped item sets the flag
// and the batch drops its connection after all items ran.
type batchAbortKey struct{}

// abort drops the connection without an answer.
func abort(r *http.Request) {
	if flag, ok := r.Context().Value(batchAbortKey{}).(*bool); ok {
		*flag = true
		return
	}
	panic(http.ErrAbortHandler)
}

func withBatchAbort(ctx context.Context, flag *bool) context.Context {
	return context.WithValue(ctx, batchAbortKey{}, flag)
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

// rfc3339 formats times the way Graph does: UTC with seven fractional
// digits ("2026-11-27T06:00:01.1234567Z"), and "never" as
// "0001-01-01T00:00:00Z".
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00Z"
	}
	return t.UTC().Format("2006-01-02T15:04:05.0000000Z07:00")
}
