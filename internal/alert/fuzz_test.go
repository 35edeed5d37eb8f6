package alert

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
)

// FuzzMap: any body maps to a request of GUID devices with a script, is
// ignored, or is refused with 400 or 422 — never a panic, never a 5xx.
func FuzzMap(f *testing.F) {
	seeds, _ := filepath.Glob("../../testdata/alerts/*.json")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b, "")
	}
	f.Add([]byte(`{"schemaId":"azureMonitorCommonAlertSchema","data":{"customProperties":{"deviceIds":["`+dev1+`"],"scriptPolicyId":7}}}`), script)
	f.Fuzz(func(t *testing.T, body []byte, query string) {
		m, err := Map(body, query, Settings{})
		if err != nil {
			var ae *fault.Error
			if !errors.As(err, &ae) || (ae.Code != fault.InvalidRequest && ae.Code != fault.AlertNotActionable) || ae.Message == "" {
				t.Fatalf("unclear refusal: %v", err)
			}
			return
		}
		if m.Ignored {
			return
		}
		if len(m.Request.ManagedDevices) == 0 {
			t.Fatal("a request without devices")
		}
		for _, d := range m.Request.ManagedDevices {
			if !intune.IsGUID(d.DeviceID) || !intune.IsGUID(d.ScriptPolicyID) {
				t.Fatalf("bad target %+v", d)
			}
		}
	})
}
