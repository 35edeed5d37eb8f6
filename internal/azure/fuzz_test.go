package azure

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzEnvelope: any host payload either yields the request binding (Query
// and Headers readable, Body optional) or fails to decode with an error;
// any timer binding decodes leniently. Nothing panics.
func FuzzEnvelope(f *testing.F) {
	seeds, _ := filepath.Glob("../../testdata/azure/*.json")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Add([]byte(`{"Data":{"req":{"Query":"{}","Headers":{"a":["b","c"]}}}}`))
	f.Add([]byte(`{"Data":{"timer":"{\"IsPastDue\":true}"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var env envelope
		if json.Unmarshal(b, &env) != nil {
			return
		}
		if raw, ok := env.binding("req"); ok {
			var req hostRequest
			if json.Unmarshal(raw, &req) == nil {
				_ = req.Headers.get("X-MS-CLIENT-PRINCIPAL-NAME")
				_ = req.Query.get("script_policy_id")
			}
		}
		if raw, ok := env.binding("timer"); ok {
			_, _ = decodeTimer(raw)
		}
	})
}
