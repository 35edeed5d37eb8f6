package httpapi

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/remediate"
)

// FuzzRemediateNeverAServerError: whatever the body, the answer is a
// summary or a 4xx with a code and message — never a 5xx, which callers
// would retry. The engine runs against the simulator.
func FuzzRemediateNeverAServerError(f *testing.F) {
	seeds, _ := filepath.Glob("../../examples/*.json")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Add([]byte(`{"managed_devices":[{"device_id":"12345678-1234-1234-1234-123456789abc","script_policy_id":"87654321-4321-4321-4321-ba9876543210"}]}`))
	api, _, _ := newAPI(f, app.Options{Limits: remediate.Limits{MaxDevices: 50}})
	h := api.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		status, _, out := call(h, "POST", "/api/remediate", string(body))
		if status >= 500 || status < 200 {
			t.Fatalf("status %d for %q: %s", status, body, out)
		}
		var answer struct {
			RunID string `json:"run_id"`
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(out, &answer); err != nil {
			t.Fatalf("answer is not JSON: %s", out)
		}
		if answer.RunID == "" && (answer.Error == nil || answer.Error.Code == "" || answer.Error.Message == "" || status < 400) {
			t.Fatalf("unclear refusal %d %s", status, out)
		}
	})
}
