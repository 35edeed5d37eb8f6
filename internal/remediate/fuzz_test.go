package remediate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
)

// FuzzDecodeValidate: every body either decodes and validates into a plan
// whose items are unique GUID pairs, or is refused with field-level
// problems; nothing panics.
func FuzzDecodeValidate(f *testing.F) {
	seeds, _ := filepath.Glob("../../examples/*.json")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Add([]byte(`{"managed_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"}],"timeouts":{"invoke":"5m"}}`))
	f.Add([]byte(`{"targets":[{"script_policy_id":"` + script + `","device_names":["PC-1"],"on_duplicate_name":"all"}],"confirm_device_count":3}`))
	f.Add([]byte(`{"managed_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"},{"device_id":"` + strings.ToUpper(dev1) + `","script_policy_id":"` + other + `"}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := Decode(strings.NewReader(string(body)))
		if err == nil {
			var plan Plan
			plan, err = Validate(req, Limits{MaxDevices: 100})
			if err == nil {
				seen := map[string]bool{}
				for _, it := range plan.Items {
					key := strings.ToLower(it.DeviceID)
					if seen[key] || !intune.IsGUID(it.DeviceID) || !intune.IsGUID(it.ScriptPolicyID) {
						t.Fatalf("bad plan item %+v", it)
					}
					seen[key] = true
				}
				if len(plan.Items) > 100 {
					t.Fatalf("%d items passed a limit of 100", len(plan.Items))
				}
				return
			}
		}
		var ie *fault.Error
		if !errors.As(err, &ie) || len(ie.Details) == 0 {
			t.Fatalf("refusal without details: %v", err)
		}
		for _, d := range ie.Details {
			if d.Message == "" {
				t.Fatalf("a problem without a message: %+v", d)
			}
		}
	})
}
