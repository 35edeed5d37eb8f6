package graph

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/remediator/remediator/internal/intune"
)

// FuzzErrorBody: any error body, with any headers, becomes an *intune.Error with
// a message and a one-line description; nothing panics (unlike the SDK's
// ODataError.Error on a body without a message).
func FuzzErrorBody(f *testing.F) {
	seeds, _ := filepath.Glob("../intunesim/testdata/*.json")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(500, b, "2")
	}
	f.Add(429, []byte(`{}`), "")
	f.Add(502, []byte(`<html>`), "soon")
	f.Add(404, []byte(`{"error":{"code":"x","message":"{\"_version\":3,\"Message\":\"inner\"}"}}`), "")
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		e := intune.ItemError(status, map[string]string{"Retry-After": retryAfter, "request-id": "r"}, body)
		if e.Message == "" {
			t.Fatal("no message")
		}
		if s := e.Error(); strings.TrimSpace(s) == "" {
			t.Fatal("empty description")
		}
		code, msg := intune.ErrorBody(body)
		_ = intune.CleanMessage(msg)
		_ = code
	})
}
