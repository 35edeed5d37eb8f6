package alert

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/fault"
)

const (
	dev1   = "12345678-1234-4234-8234-123456789abc"
	dev2   = "abcdef12-3456-4890-abcd-ef1234567890"
	script = "87654321-4321-4321-4321-ba9876543210"
)

// sample reads a documented payload from testdata with placeholders filled.
func sample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/alerts/" + name)
	require.NoError(t, err)
	return []byte(strings.NewReplacer("{{DEVICE_1}}", dev1, "{{DEVICE_2}}", dev2, "{{SCRIPT}}", script).Replace(string(b)))
}

func ids(m Mapping) []string {
	var out []string
	for _, t := range m.Request.ManagedDevices {
		out = append(out, t.DeviceID)
		if t.ScriptPolicyID == "" {
			panic("no script")
		}
	}
	return out
}

func TestFiredWithDimensions(t *testing.T) {
	m, err := Map(sample(t, "log_alert_v2_fired.json"), "", Settings{})
	require.NoError(t, err)
	assert.False(t, m.Ignored)
	assert.Equal(t, "dimensions", m.Source)
	assert.Equal(t, []string{dev1}, ids(m))
	assert.Equal(t, script, m.Request.ManagedDevices[0].ScriptPolicyID)
	assert.True(t, m.Request.IgnorePartialFailures)
	assert.Equal(t, "/subscriptions/11111111-1111-1111-1111-111111111111/providers/Microsoft.AlertsManagement/alerts/12345678-1234-1234-1234-1234567890ab|2026-11-27T10:15:00.1234567Z", m.Key)
	assert.Equal(t, "Defender signatures out of date", m.AlertRule)
}

func TestDimensionNameIsConfigurable(t *testing.T) {
	_, err := Map(sample(t, "log_alert_v2_fired.json"), "", Settings{DeviceDimension: "IntuneDeviceId"})
	var ae *fault.Error
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, fault.AlertNotActionable, ae.Code)
	m, err := Map(sample(t, "log_alert_v2_fired.json"), "", Settings{DeviceDimension: "deviceid"})
	require.NoError(t, err, "matched case-insensitively")
	assert.Equal(t, []string{dev1}, ids(m))
}

func TestResolvedIsIgnored(t *testing.T) {
	m, err := Map(sample(t, "log_alert_v2_resolved.json"), "", Settings{})
	require.NoError(t, err)
	assert.True(t, m.Ignored)
	assert.Contains(t, m.Reason, "Resolved")
	assert.Empty(t, m.Request.ManagedDevices)
}

func TestCustomPropertiesDeviceIDs(t *testing.T) {
	m, err := Map(sample(t, "log_alert_v2_custom_properties.json"), "", Settings{})
	require.NoError(t, err)
	assert.Equal(t, "customProperties", m.Source)
	assert.Equal(t, []string{dev1, dev2}, ids(m))
}

func TestLegacySearchResults(t *testing.T) {
	m, err := Map(sample(t, "log_alert_legacy_search_results.json"), script, Settings{})
	require.NoError(t, err)
	assert.Equal(t, "searchResults", m.Source)
	assert.Equal(t, []string{dev1, dev2}, ids(m), "de-duplicated, in order")
	assert.Equal(t, script, m.Request.ManagedDevices[0].ScriptPolicyID, "script from the query")
}

func TestScriptPrecedence(t *testing.T) {
	other := "11111111-2222-4333-8444-555555555555"
	m, err := Map(sample(t, "log_alert_v2_fired.json"), other, Settings{ScriptPolicyID: other})
	require.NoError(t, err)
	assert.Equal(t, script, m.Request.ManagedDevices[0].ScriptPolicyID, "custom property first")
	m, err = Map(sample(t, "log_alert_legacy_search_results.json"), "", Settings{ScriptPolicyID: other})
	require.NoError(t, err)
	assert.Equal(t, other, m.Request.ManagedDevices[0].ScriptPolicyID, "setting last")
	_, err = Map(sample(t, "log_alert_legacy_search_results.json"), "", Settings{})
	assert.ErrorContains(t, err, "no remediation script")
	_, err = Map(sample(t, "log_alert_legacy_search_results.json"), "not-a-guid", Settings{})
	assert.ErrorContains(t, err, "not a GUID")
}

func TestAlertsWithoutDevices(t *testing.T) {
	for _, name := range []string{"log_alert_v2_no_device.json", "metric_alert_fired.json"} {
		t.Run(name, func(t *testing.T) {
			_, err := Map(sample(t, name), script, Settings{})
			var ae *fault.Error
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, fault.AlertNotActionable, ae.Code)
			assert.Contains(t, ae.Message, "names no device")
		})
	}
}

func TestNotAnAlert(t *testing.T) {
	for body, code := range map[string]fault.Code{`nope`: fault.InvalidRequest, `{"schemaId":"Microsoft.Insights/activityLogs","data":{}}`: fault.AlertNotActionable, `{}`: fault.AlertNotActionable} {
		_, err := Map([]byte(body), script, Settings{})
		var ae *fault.Error
		require.ErrorAs(t, err, &ae, body)
		assert.Equal(t, code, ae.Code, body)
	}
}

func TestNonGUIDValuesAreReported(t *testing.T) {
	body := strings.Replace(string(sample(t, "log_alert_v2_custom_properties.json")), dev2, "PC-00002", 1)
	m, err := Map([]byte(body), "", Settings{})
	require.NoError(t, err)
	assert.Equal(t, []string{dev1}, ids(m))
	require.Len(t, m.Warnings, 1)
	assert.Contains(t, m.Warnings[0], "PC-00002")
}
