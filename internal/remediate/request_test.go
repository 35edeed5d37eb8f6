package remediate

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
)

const (
	dev1   = "12345678-1234-1234-1234-123456789abc"
	dev2   = "abcdef12-3456-7890-abcd-ef1234567890"
	script = "87654321-4321-4321-4321-ba9876543210"
	other  = "11111111-2222-3333-4444-555555555555"
)

func parse(body string, lim Limits) (Plan, error) {
	req, err := Decode(strings.NewReader(body))
	if err != nil {
		return Plan{}, err
	}
	return Validate(req, lim)
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		fields []string // the fields at fault, in order; nil means valid
	}{
		{"minimal", `{"managed_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"}]}`, nil},
		{"co-managed only", `{"comanaged_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"}]}`, nil},
		{"null lists count as absent", `{"managed_devices":null,"comanaged_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"}]}`, nil},
		{"no devices", `{}`, []string{"managed_devices"}},
		{"empty lists", `{"managed_devices":[],"comanaged_devices":[]}`, []string{"managed_devices"}},
		{"device id not a GUID", `{"managed_devices":[{"device_id":"PC-001","script_policy_id":"` + script + `"}]}`, []string{"managed_devices[0].device_id"}},
		{"script id not a GUID", `{"managed_devices":[{"device_id":"` + dev1 + `","script_policy_id":"x"}]}`, []string{"managed_devices[0].script_policy_id"}},
		{"every problem at once",
			`{"managed_devices":[{"device_id":"a","script_policy_id":"b"}],"comanaged_devices":[{"device_id":"c","script_policy_id":"` + script + `"}],"timeouts":{"invoke":"soon"}}`,
			[]string{"timeouts.invoke", "managed_devices[0].device_id", "managed_devices[0].script_policy_id", "comanaged_devices[0].device_id"}},
		{"unknown top-level field", `{"managed_device":[]}`, []string{"managed_device"}},
		{"unknown nested field", `{"managed_devices":[{"device_id":"` + dev1 + `","script_id":"` + script + `"}]}`, []string{"managed_devices[0].script_id"}},
		{"unknown field in timeouts", `{"managed_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"}],"timeouts":{"create":"1m"}}`, []string{"timeouts.create"}},
		{"wrong types (in the order of the body)", `{"managed_devices":{},"ignore_partial_failures":"yes","dry_run":1}`, []string{"managed_devices", "ignore_partial_failures", "dry_run"}},
		{"list element not an object", `{"managed_devices":["` + dev1 + `"]}`, []string{"managed_devices[0]"}},
		{"not JSON", `{"managed_devices":`, []string{""}},
		{"not an object", `[1,2]`, []string{""}},
		{"two JSON values", `{} {}`, []string{""}},
		{"bad duration", `{"managed_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"}],"timeouts":{"invoke":"5 minutes"}}`, []string{"timeouts.invoke"}},
		{"negative duration", `{"managed_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"}],"timeouts":{"invoke":"-5m"}}`, []string{"timeouts.invoke"}},
		{"same device, two scripts",
			`{"managed_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"},{"device_id":"` + dev1 + `","script_policy_id":"` + other + `"}]}`,
			[]string{"managed_devices[1].script_policy_id"}},
		{"same device in both lists",
			`{"managed_devices":[{"device_id":"` + dev1 + `","script_policy_id":"` + script + `"}],"comanaged_devices":[{"device_id":"` + strings.ToUpper(dev1) + `","script_policy_id":"` + script + `"}]}`,
			[]string{"comanaged_devices[0].device_id"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(tc.body, Limits{MaxDevices: 10})
			if tc.fields == nil {
				require.NoError(t, err)
				return
			}
			var ie *fault.Error
			require.ErrorAs(t, err, &ie)
			var got []string
			for _, d := range ie.Details {
				got = append(got, d.Field)
				assert.NotEmpty(t, d.Message)
			}
			assert.Equal(t, tc.fields, got)
		})
	}
}

func TestValidationSuggestsTheFieldMeant(t *testing.T) {
	_, err := parse(`{"ManagedDevices":[]}`, Limits{})
	assert.ErrorContains(t, err, `did you mean "managed_devices"?`)
}

func TestDuplicatesAreRemovedWithAWarning(t *testing.T) {
	plan, err := parse(`{"managed_devices":[
		{"device_id":"`+dev1+`","script_policy_id":"`+script+`"},
		{"device_id":"`+dev2+`","script_policy_id":"`+script+`"},
		{"device_id":"`+strings.ToUpper(dev1)+`","script_policy_id":"`+strings.ToUpper(script)+`"}]}`, Limits{})
	require.NoError(t, err)
	require.Len(t, plan.Items, 2)
	assert.Equal(t, dev1, plan.Items[0].DeviceID)
	assert.Equal(t, "managed_devices[1]", plan.Items[1].Field)
	require.Len(t, plan.Warnings, 1)
	assert.Contains(t, plan.Warnings[0], "managed_devices[2] repeats managed_devices[0]")
}

func TestDefaultsAndSettings(t *testing.T) {
	plan, err := parse(`{"comanaged_devices":[{"device_id":"`+dev1+`","script_policy_id":"`+script+`"}]}`, Limits{})
	require.NoError(t, err)
	assert.True(t, plan.ValidateDevices, "validate_device_exists defaults to true")
	assert.False(t, plan.IgnorePartialFailures)
	assert.False(t, plan.DryRun)
	assert.Zero(t, plan.Invoke)
	assert.Equal(t, intune.CoManagedDevices, plan.Items[0].Collection)

	plan, err = parse(`{"managed_devices":[{"device_id":"`+dev1+`","script_policy_id":"`+script+`"}],
		"validate_device_exists":false,"ignore_partial_failures":true,"dry_run":true,"timeouts":{"invoke":"2h45m"}}`, Limits{})
	require.NoError(t, err)
	assert.False(t, plan.ValidateDevices)
	assert.True(t, plan.IgnorePartialFailures)
	assert.True(t, plan.DryRun)
	assert.Equal(t, 2*time.Hour+45*time.Minute, plan.Invoke)
}

func TestMaxDevicesPerRun(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"managed_devices":[`)
	for i := range 6 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"device_id":"00000000-0000-4000-8000-%012d","script_policy_id":"%s"}`, i, script)
	}
	b.WriteString(`]}`)
	_, err := parse(b.String(), Limits{MaxDevices: 6})
	require.NoError(t, err)
	_, err = parse(b.String(), Limits{MaxDevices: 5})
	var ie *fault.Error
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, "managed_devices", ie.Details[0].Field)
	assert.Contains(t, ie.Details[0].Message, "MAX_DEVICES_PER_RUN")
}

// TestDuplicateKeysAreRefused: a body whose objects repeat a key means two
// things at once ({"dry_run":true, …, "dry_run":false} would otherwise run
// for real); it is a 400 naming each repeated field, at any depth.
func TestDuplicateKeysAreRefused(t *testing.T) {
	t.Parallel()
	dev := `{"device_id":"12345678-1234-1234-1234-123456789abc","script_policy_id":"87654321-4321-4321-4321-ba9876543210"`
	for body, field := range map[string]string{
		`{"dry_run":true,"managed_devices":[` + dev + `}],"dry_run":false}`:                                  "dry_run",
		`{"managed_devices":[` + dev + `},` + dev + `,"device_id":"22345678-1234-1234-1234-123456789abc"}]}`: "managed_devices[1].device_id",
		`{"timeouts":{"invoke":"1m","invoke":"2h"},"managed_devices":[` + dev + `}]}`:                        "timeouts.invoke",
	} {
		_, err := Decode(strings.NewReader(body))
		var inv *fault.Error
		if assert.ErrorAs(t, err, &inv, body) && assert.NotEmpty(t, inv.Details) {
			assert.Equal(t, field, inv.Details[0].Field, body)
			assert.Contains(t, inv.Details[0].Message, "more than once")
		}
	}
	_, err := Decode(strings.NewReader(`{"managed_devices":[` + dev + `},` + dev + `}],"dry_run":true}`))
	assert.NoError(t, err, "the same key in two objects is no duplicate")
}
