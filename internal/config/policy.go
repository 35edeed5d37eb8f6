package config

import (
	"encoding/json"
	"strings"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/intune"
)

func readCallerPolicy(l *loader, v string) {
	if v == "" {
		return
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	var p app.CallerPolicy
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
