package config

import (
	"encoding/json"
	"strings"

	"github.com/remediator/remediator/internal/intune"
)

// CallerPolicy maps callers to what they may do: "function-key" (every
// holder of a function key), "principal:<object id>" (App Service
// Authentication), "iam:<ARN>" (Lambda with IAM auth), or "*" for any
// caller not listed. A caller matching no entry may do nothing.
type CallerPolicy map[string]CallerRule

// CallerRule limits one caller. An empty list, or one holding "*",
// allows any value.
type CallerRule struct {
	// Scripts are the script ids the caller may run.
	Scripts []string `json:"scripts"`
	// Tenants are the tenant ids the caller may act in ("default" for the
	// deployment's own tenant).
	Tenants []string `json:"tenants"`
	// MaxDevices caps the caller's runs below MAX_DEVICES_PER_RUN; 0 is
	// the deployment's cap.
	MaxDevices int `json:"max_devices"`
}

func readCallerPolicy(l *loader, v string) {
	if v == "" {
		return
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	var p CallerPolicy
	if err := dec.Decode(&p); err != nil {
		l.bad("CALLER_POLICY", "is not a policy such as {\"function-key\":{\"scripts\":[\"<id>\"],\"max_devices\":50}}: %v", err)
		return
	}
	for caller, r := range p {
		for _, id := range r.Scripts {
			if id != "*" && !intune.IsGUID(id) {
				l.bad("CALLER_POLICY", "%s: script %q is not a GUID", caller, id)
			}
		}
		for _, id := range r.Tenants {
			if id != "*" && id != "default" && !intune.IsGUID(id) {
				l.bad("CALLER_POLICY", "%s: tenant %q is not a GUID or default", caller, id)
			}
		}
		if r.MaxDevices < 0 {
			l.bad("CALLER_POLICY", "%s: max_devices must not be negative", caller)
		}
	}
	l.c.CallerPolicy = p
}
