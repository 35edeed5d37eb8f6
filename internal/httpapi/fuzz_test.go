package httpapi

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/remediator/remediator/internal/remediate"
)

// planRunner accounts for every planned device as succeeded, without
// Graph.
type planRunner struct{}

func (planRunner) Run(_ context.Context, p remediate.Plan) *remediate.Summary {
	s := &remediate.Summary{Status: remediate.StatusSucceeded}
	for _, it := range p.Items {
		s.Devices = append(s.Devices, remediate.DeviceResult{DeviceID: it.DeviceID, Outcome: remediate.Succeeded})
	}
	return s
}

// FuzzRemediateNeverAServerError: whatever the body, the answer is a
// summary or a 4xx with a code and message — never a 5xx, which callers
// would retry.
func FuzzRemediateNeverAServerError(f *testing.F) {
	seeds, _ := filepath.Glob("../../examples/*.json")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Add([]byte(`{"managed_devices":[{"device_id":"12345678-1234-1234-1234-123456789abc","script_policy_id":"87654321-4321-4321-4321-ba9876543210"}]}`))
	api := New(planRunner{}, Options{Limits: remediate.Limits{MaxDevices: 50}}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	f.Fuzz(func(t *testing.T, body []byte) {
		res := api.Remediate(context.Background(), bytes.NewReader(body))
		if res.Status >= 500 || res.Status < 200 {
			t.Fatalf("status %d for %q", res.Status, body)
		}
		switch b := res.Body.(type) {
		case *remediate.Summary:
		case ErrorResponse:
			if b.Error.Code == "" || b.Error.Message == "" || res.Status < 400 {
				t.Fatalf("unclear refusal %d %+v", res.Status, b)
			}
		default:
			t.Fatalf("unexpected body %T", b)
		}
	})
}
