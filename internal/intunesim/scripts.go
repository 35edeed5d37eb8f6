package intunesim

import (
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strings"
	"time"
)

type stateKey struct{ device, script string } // lower-case ids

type runState struct {
	triggeredAt time.Time
	previous    time.Time // when the previous run finished, zero if none
}

// Outcomes a triggered run settles into, chosen per device+script.
const (
	OutcomeNoIssue           = "no_issue"
	OutcomeRemediated        = "remediated"
	OutcomeRemediationFailed = "remediation_failed"
	OutcomeScriptError       = "script_error"
)

// FinalOutcome is the outcome the run of script on device settles into.
func FinalOutcome(deviceID, scriptID string) string {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(deviceID) + "|" + strings.ToLower(scriptID)))
	switch n := h.Sum32() % 10; {
	case n < 4:
		return OutcomeNoIssue
	case n < 8:
		return OutcomeRemediated
	case n < 9:
		return OutcomeRemediationFailed
	default:
		return OutcomeScriptError
	}
}

// share is a number in [0, 1) fixed by the device, the script and salt.
func share(deviceID, scriptID, salt string) float64 {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(deviceID) + "|" + strings.ToLower(scriptID) + "|" + salt))
	return float64(h.Sum32()%10000) / 10000
}

// outcome is the outcome the run of sc on d settles into under the
// server's options ("" for a device that never reports).
func (s *Server) outcome(d *Device, sc *Script) string {
	if share(d.ID, "", "offline") < s.opts.Offline {
		return ""
	}
	rate, ok := s.opts.ScriptFailure[strings.ToLower(sc.ID)]
	if !ok {
		return FinalOutcome(d.ID, sc.ID)
	}
	fail, half := share(d.ID, sc.ID, "fail") < rate, share(d.ID, sc.ID, "kind") < 0.5
	switch {
	case fail && half:
		return OutcomeRemediationFailed
	case fail:
		return OutcomeScriptError
	case half:
		return OutcomeNoIssue
	}
	return OutcomeRemediated
}

func (s *Server) script(id string) *Script {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.scripts[strings.ToLower(id)]
	if !ok {
		return nil
	}
	sc := s.tenant.Scripts[i]
	return &sc
}

func (s *Server) recordTrigger(d *Device, sc *Script) {
	k := stateKey{strings.ToLower(d.ID), strings.ToLower(sc.ID)}
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.triggers[k]++
	s.counters.Triggers++
	st := s.states[k]
	if st == nil {
		st = &runState{}
		s.states[k] = st
	} else if s.finished(st, now) {
		st.previous = st.triggeredAt.Add(s.opts.RunStateDelay)
	}
	st.triggeredAt = now
	s.lastRun[k.device] = st
}

func (s *Server) finished(st *runState, now time.Time) bool {
	return !now.Before(st.triggeredAt.Add(s.opts.RunStateDelay))
}

// stateProps renders a run state; pending until RunStateDelay has passed
// since the trigger, then final.
func (s *Server) stateProps(d *Device, sc *Script, st *runState, now time.Time) map[string]any {
	p := map[string]any{
		"id":                                   sc.ID + ":" + d.ID,
		"detectionState":                       "pending",
		"remediationState":                     "unknown",
		"lastStateUpdateDateTime":              rfc3339(st.previous),
		"expectedStateUpdateDateTime":          rfc3339(st.triggeredAt.Add(s.opts.RunStateDelay)),
		"lastSyncDateTime":                     rfc3339(d.LastSyncDateTime),
		"preRemediationDetectionScriptOutput":  "",
		"preRemediationDetectionScriptError":   "",
		"remediationScriptError":               "",
		"postRemediationDetectionScriptOutput": "",
		"postRemediationDetectionScriptError":  "",
		"assignmentFilterIds":                  []string{},
	}
	out := s.outcome(d, sc)
	if !s.finished(st, now) || out == "" {
		return p
	}
	p["lastStateUpdateDateTime"] = rfc3339(st.triggeredAt.Add(s.opts.RunStateDelay))
	switch out {
	case OutcomeNoIssue:
		p["detectionState"], p["remediationState"] = "success", "skipped"
		p["preRemediationDetectionScriptOutput"] = "Compliant"
	case OutcomeRemediated:
		p["detectionState"], p["remediationState"] = "fail", "success"
		p["preRemediationDetectionScriptOutput"] = "Issue detected"
		p["postRemediationDetectionScriptOutput"] = "Compliant"
	case OutcomeRemediationFailed:
		p["detectionState"], p["remediationState"] = "fail", "remediationFailed"
		p["preRemediationDetectionScriptOutput"] = "Issue detected"
		p["remediationScriptError"] = "Access is denied."
	case OutcomeScriptError:
		p["detectionState"], p["remediationState"] = "scriptError", "skipped"
		p["preRemediationDetectionScriptError"] = "The term 'Get-Thing' is not recognized"
	}
	return p
}

func scriptProps(sc *Script) map[string]any {
	return map[string]any{
		"@odata.type":                 "#microsoft.graph.deviceHealthScript",
		"id":                          sc.ID,
		"displayName":                 sc.DisplayName,
		"description":                 "",
		"publisher":                   sc.Publisher,
		"version":                     sc.Version,
		"runAsAccount":                "system",
		"enforceSignatureCheck":       false,
		"runAs32Bit":                  false,
		"isGlobalScript":              false,
		"deviceHealthScriptType":      sc.ScriptType,
		"roleScopeTagIds":             []string{"0"},
		"createdDateTime":             rfc3339(sc.LastModifiedDateTime.AddDate(0, -1, 0)),
		"lastModifiedDateTime":        rfc3339(sc.LastModifiedDateTime),
		"highestAvailableVersion":     sc.Version,
		"detectionScriptContent":      "V3JpdGUtT3V0cHV0ICJDb21wbGlhbnQiOyBleGl0IDA=",
		"remediationScriptContent":    "V3JpdGUtT3V0cHV0ICJGaXhlZCI7IGV4aXQgMA==",
		"detectionScriptParameters":   []any{},
		"remediationScriptParameters": []any{},
	}
}

func (s *Server) listScripts(w http.ResponseWriter, r *http.Request, _ []byte) {
	s.mu.Lock()
	items := make([]map[string]any, len(s.tenant.Scripts))
	for i := range s.tenant.Scripts {
		items[i] = scriptProps(&s.tenant.Scripts[i])
	}
	s.mu.Unlock()
	s.writePage(w, r, "deviceManagement/deviceHealthScripts", len(items), func(i int) map[string]any { return items[i] })
}

func (s *Server) getScript(w http.ResponseWriter, r *http.Request, id string) {
	sc := s.script(id)
	if sc == nil {
		writeError(w, r, http.StatusNotFound, "ResourceNotFound", "Resource '"+id+"' does not exist or one of its queried reference-property objects are not present.")
		return
	}
	p := scriptProps(sc)
	p["@odata.context"] = graphRoot + "deviceManagement/deviceHealthScripts/$entity"
	writeJSON(w, r, http.StatusOK, p)
}

// scriptRunStates lists deviceHealthScriptDeviceState rows of a script;
// $expand=managedDevice adds the device's id and name.
func (s *Server) scriptRunStates(w http.ResponseWriter, r *http.Request, id string) {
	sc := s.script(id)
	if sc == nil {
		writeError(w, r, http.StatusNotFound, "ResourceNotFound", "Resource '"+id+"' does not exist or one of its queried reference-property objects are not present.")
		return
	}
	expand := strings.Contains(r.URL.Query().Get("$expand"), "managedDevice")
	now := s.opts.Now()
	s.mu.Lock()
	var items []map[string]any
	for k, st := range s.states {
		if k.script != strings.ToLower(sc.ID) {
			continue
		}
		d := s.tenant.Devices[s.byID[k.device]]
		p := s.stateProps(&d, sc, st, now)
		p["@odata.type"] = "#microsoft.graph.deviceHealthScriptDeviceState"
		if expand {
			p["managedDevice"] = map[string]any{"id": d.ID, "deviceName": d.DeviceName}
		}
		items = append(items, p)
	}
	s.mu.Unlock()
	slices.SortFunc(items, func(a, b map[string]any) int { return strings.Compare(a["id"].(string), b["id"].(string)) })
	s.writePage(w, r, "deviceManagement/deviceHealthScripts('"+sc.ID+"')/deviceRunStates", len(items), func(i int) map[string]any { return items[i] })
}

// deviceScriptStates lists deviceHealthScriptPolicyState rows of a device.
func (s *Server) deviceScriptStates(w http.ResponseWriter, r *http.Request, id string) {
	d := s.device(id)
	if d == nil {
		writeError(w, r, http.StatusNotFound, "ResourceNotFound", "Resource '"+id+"' does not exist or one of its queried reference-property objects are not present.")
		return
	}
	now := s.opts.Now()
	s.mu.Lock()
	var items []map[string]any
	for k, st := range s.states {
		if k.device != strings.ToLower(d.ID) {
			continue
		}
		sc := s.tenant.Scripts[s.scripts[k.script]]
		p := s.stateProps(d, &sc, st, now)
		p["@odata.type"] = "#microsoft.graph.deviceHealthScriptPolicyState"
		p["deviceId"], p["policyId"], p["deviceName"] = d.ID, sc.ID, d.DeviceName
		p["policyName"], p["osVersion"], p["userName"] = sc.DisplayName, d.OSVersion, ""
		items = append(items, p)
	}
	s.mu.Unlock()
	slices.SortFunc(items, func(a, b map[string]any) int { return strings.Compare(a["id"].(string), b["id"].(string)) })
	s.writePage(w, r, "deviceManagement/managedDevices('"+d.ID+"')/deviceHealthScriptStates", len(items), func(i int) map[string]any { return items[i] })
}

// groupDevices lists a group's transitive members of type device.
func (s *Server) groupDevices(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	var g *Group
	for i := range s.tenant.Groups {
		if strings.EqualFold(s.tenant.Groups[i].ID, id) {
			g = &s.tenant.Groups[i]
		}
	}
	var members []string
	if g != nil {
		members = append(members, g.Members...)
	}
	names := map[string]string{}
	for _, d := range s.tenant.Devices {
		names[strings.ToLower(d.AzureADDeviceID)] = d.DeviceName
	}
	s.mu.Unlock()
	if g == nil {
		writeError(w, r, http.StatusNotFound, "Request_ResourceNotFound", "Resource '"+id+"' does not exist or one of its queried reference-property objects are not present.")
		return
	}
	s.writePage(w, r, "directoryObjects", len(members), func(i int) map[string]any {
		name := names[strings.ToLower(members[i])]
		if name == "" {
			name = "UNMANAGED-" + members[i][:8]
		}
		return map[string]any{"@odata.type": "#microsoft.graph.device", "id": newIDFrom(members[i]), "deviceId": members[i],
			"displayName": name, "operatingSystem": "Windows", "accountEnabled": true}
	})
}

// newIDFrom derives a stable directory object id from an Entra device id.
func newIDFrom(deviceID string) string {
	h := fnv.New128a()
	h.Write([]byte(deviceID))
	b := h.Sum(nil)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
