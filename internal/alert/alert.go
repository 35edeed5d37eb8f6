// Package alert maps an Azure Monitor alert (common alert schema) to a
// remediation request: which devices, which script, and whether to act at
// all (a resolved alert triggers nothing).
package alert

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/remediate"
)

// Settings are the operator's choices for alerts.
type Settings struct {
	// DeviceDimension is the dimension or column naming devices (matched
	// case-insensitively). Default "DeviceId".
	DeviceDimension string
	// ScriptPolicyID is the script used when neither the alert's custom
	// properties nor the query name one.
	ScriptPolicyID string
}

// Mapping is what an alert asks for.
type Mapping struct {
	// Ignored is true for a resolved alert; Reason says why.
	Ignored bool
	Reason  string
	// AlertID, AlertRule and FiredDateTime identify the alert; Key (their
	// combination) identifies one delivery for idempotency, since action
	// groups and Logic Apps re-send on retry.
	AlertID, AlertRule, FiredDateTime, Key string
	// Source says where the devices came from: dimensions,
	// customProperties or searchResults.
	Source   string
	Request  remediate.Request
	Warnings []string
}

type dimension struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type table struct {
	Name    string `json:"name"`
	Columns []struct {
		Name string `json:"name"`
	} `json:"columns"`
	Rows [][]any `json:"rows"`
}

type payload struct {
	SchemaID string `json:"schemaId"`
	Data     *struct {
		Essentials struct {
			AlertID          string `json:"alertId"`
			AlertRule        string `json:"alertRule"`
			MonitorCondition string `json:"monitorCondition"`
			FiredDateTime    string `json:"firedDateTime"`
		} `json:"essentials"`
		AlertContext struct {
			Properties map[string]any `json:"properties"`
			Condition  struct {
				AllOf []struct {
					Dimensions []dimension `json:"dimensions"`
				} `json:"allOf"`
			} `json:"condition"`
			SearchResults *struct {
				Tables []table `json:"tables"`
			} `json:"SearchResults"`
		} `json:"alertContext"`
		CustomProperties map[string]any `json:"customProperties"`
	} `json:"data"`
}

// Map reads a common-schema alert. queryScript is the script_policy_id
// query parameter of the call, if any. Devices come from, in order: the
// condition's dimensions named s.DeviceDimension; customProperties.deviceIds
// (comma-separated); a legacy log alert's SearchResults column of that
// name. The script comes from customProperties.scriptPolicyId, then
// queryScript, then s.ScriptPolicyID. Errors are *fault.Error.
func Map(body []byte, queryScript string, s Settings) (Mapping, error) {
	if s.DeviceDimension == "" {
		s.DeviceDimension = "DeviceId"
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return Mapping{}, &fault.Error{Code: fault.InvalidRequest, Message: "the body is not an Azure Monitor alert: " + err.Error()}
	}
	if p.Data == nil || !strings.EqualFold(p.SchemaID, "azureMonitorCommonAlertSchema") {
		return Mapping{}, &fault.Error{Code: fault.AlertNotActionable, Message: "the alert does not use the common alert schema; enable \"Use common alert schema\" on the action group's action"}
	}
	ess := p.Data.Essentials
	m := Mapping{AlertID: ess.AlertID, AlertRule: ess.AlertRule, FiredDateTime: ess.FiredDateTime}
	if ess.AlertID != "" {
		m.Key = ess.AlertID + "|" + ess.FiredDateTime
	}
	if strings.EqualFold(ess.MonitorCondition, "Resolved") {
		m.Ignored, m.Reason = true, "monitorCondition is Resolved; nothing to remediate"
		return m, nil
	}
	props := mergeProps(p.Data.CustomProperties, p.Data.AlertContext.Properties)

	var values []string
	for _, c := range p.Data.AlertContext.Condition.AllOf {
		for _, d := range c.Dimensions {
			if strings.EqualFold(d.Name, s.DeviceDimension) {
				values = append(values, d.Value)
			}
		}
	}
	m.Source = "dimensions"
	if len(values) == 0 {
		values, m.Source = splitList(props["deviceids"]), "customProperties"
	}
	if len(values) == 0 && p.Data.AlertContext.SearchResults != nil {
		values, m.Source = columnValues(p.Data.AlertContext.SearchResults.Tables, s.DeviceDimension), "searchResults"
	}
	script := firstString(props["scriptpolicyid"])
	switch {
	case script != "":
	case queryScript != "":
		script = queryScript
	default:
		script = s.ScriptPolicyID
	}

	seen := map[string]bool{}
	var bad []string
	for _, v := range values {
		v = strings.TrimSpace(v)
		switch {
		case v == "":
		case !intune.IsGUID(v):
			bad = append(bad, v)
		case !seen[strings.ToLower(v)]:
			seen[strings.ToLower(v)] = true
			m.Request.ManagedDevices = append(m.Request.ManagedDevices, remediate.Target{DeviceID: v, ScriptPolicyID: script})
		}
	}
	if len(bad) > 0 {
		m.Warnings = append(m.Warnings, fmt.Sprintf("ignored %d %s values that are not Intune device ids (GUIDs): %s", len(bad), s.DeviceDimension, strings.Join(first(bad, 5), ", ")))
	}
	switch {
	case len(m.Request.ManagedDevices) == 0:
		m.Source = ""
		return m, &fault.Error{Code: fault.AlertNotActionable, Message: fmt.Sprintf("the alert names no device: expected a %q dimension, customProperties.deviceIds, or a %q column in SearchResults (set ALERT_DEVICE_DIMENSION to the name your query uses)%s",
			s.DeviceDimension, s.DeviceDimension, badNote(bad))}
	case script == "":
		return m, &fault.Error{Code: fault.AlertNotActionable, Message: "the alert names no remediation script: set the custom property scriptPolicyId on the alert rule, the query parameter script_policy_id, or ALERT_SCRIPT_POLICY_ID"}
	case !intune.IsGUID(script):
		return m, &fault.Error{Code: fault.AlertNotActionable, Message: fmt.Sprintf("the script policy id %q is not a GUID", script)}
	}
	// One retired device must not stop the others an alert names.
	m.Request.IgnorePartialFailures = true
	return m, nil
}

func badNote(bad []string) string {
	if len(bad) == 0 {
		return ""
	}
	return "; values found that are not device ids: " + strings.Join(first(bad, 5), ", ")
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// mergeProps folds custom properties from both places real payloads carry
// them, keys lower-cased; data.customProperties wins.
func mergeProps(maps ...map[string]any) map[string]any {
	out := map[string]any{}
	for i := len(maps) - 1; i >= 0; i-- {
		for k, v := range maps[i] {
			out[strings.ToLower(k)] = v
		}
	}
	return out
}

// splitList reads a comma-, semicolon- or space-separated string, or a
// JSON array of strings.
func splitList(v any) []string {
	switch t := v.(type) {
	case string:
		return strings.FieldsFunc(t, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\n' })
	case []any:
		var out []string
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func firstString(v any) string {
	if l := splitList(v); len(l) > 0 {
		return strings.TrimSpace(l[0])
	}
	return ""
}

// columnValues reads the column named name (case-insensitively) of every
// table.
func columnValues(tables []table, name string) []string {
	var out []string
	for _, t := range tables {
		col := -1
		for i, c := range t.Columns {
			if strings.EqualFold(c.Name, name) {
				col = i
			}
		}
		if col < 0 {
			continue
		}
		for _, row := range t.Rows {
			if col < len(row) {
				if s, ok := row[col].(string); ok {
					out = append(out, s)
				}
			}
		}
	}
	return out
}
