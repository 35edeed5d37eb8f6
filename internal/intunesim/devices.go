package intunesim

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
)

const graphRoot = "https://graph.microsoft.com/beta/$metadata#"

// deviceProps renders a device the way Graph does.
func deviceProps(d *Device) map[string]any {
	deviceType := "desktop"
	switch d.OperatingSystem {
	case "iOS":
		deviceType = "iPhone"
	case "Android":
		deviceType = "androidForWork"
	case "macOS":
		deviceType = "macMDM"
	}
	return map[string]any{
		"@odata.type":                  "#microsoft.graph.managedDevice",
		"id":                           d.ID,
		"deviceName":                   d.DeviceName,
		"operatingSystem":              d.OperatingSystem,
		"osVersion":                    d.OSVersion,
		"joinType":                     d.JoinType,
		"managementAgent":              d.ManagementAgent,
		"managementState":              d.ManagementState,
		"lastSyncDateTime":             rfc3339(d.LastSyncDateTime),
		"azureADDeviceId":              d.AzureADDeviceID,
		"azureActiveDirectoryDeviceId": d.AzureADDeviceID,
		"managedDeviceOwnerType":       d.OwnerType,
		"deviceType":                   deviceType,
		"complianceState":              "compliant",
		"deviceCategoryDisplayName":    "Unknown Category",
		"jailBroken":                   "Unknown",
		"skuFamily":                    "",
		"userId":                       "",
		"userPrincipalName":            "",
		"deviceEnrollmentType":         "windowsAzureADJoin",
		"enrolledDateTime":             rfc3339(d.LastSyncDateTime.AddDate(-1, 0, 0)),
	}
}

// selectProps applies $select. For an unknown property it returns Graph's
// message naming it, and nil.
func selectProps(props map[string]any, sel string) (map[string]any, string) {
	if sel == "" {
		return props, ""
	}
	out := make(map[string]any, 8)
	for _, name := range strings.Split(sel, ",") {
		name = strings.TrimSpace(name)
		v, ok := props[name]
		if !ok || strings.HasPrefix(name, "@") {
			return nil, "Could not find a property named '" + name + "' on type 'microsoft.graph.managedDevice'."
		}
		out[name] = v
	}
	return out, ""
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, _ []byte) {
	q := r.URL.Query()
	match, err := parseFilter(q.Get("$filter"), !s.opts.StrictFilters)
	if err != nil {
		var fe *filterError
		if errors.As(err, &fe) && fe.status == http.StatusInternalServerError {
			writeIntuneError(w, r, fe.status, "InternalError", "An internal server error has occurred")
			return
		}
		writeError(w, r, http.StatusBadRequest, "BadRequest", "Invalid filter clause: "+err.Error())
		return
	}
	s.mu.Lock()
	var hits []*Device
	for i := range s.tenant.Devices {
		if match(&s.tenant.Devices[i]) {
			hits = append(hits, &s.tenant.Devices[i])
		}
	}
	s.mu.Unlock()
	s.writePage(w, r, "deviceManagement/managedDevices", len(hits), func(i int) map[string]any { return deviceProps(hits[i]) })
}

// writePage writes one page of a collection of n items, rendering only the
// page's items, with an absolute nextLink that keeps the request's other
// query options.
func (s *Server) writePage(w http.ResponseWriter, r *http.Request, context string, n int, item func(i int) map[string]any) {
	q := r.URL.Query()
	size := s.opts.PageSize
	if top := q.Get("$top"); top != "" {
		n, err := strconv.Atoi(top)
		if err != nil || n < 0 {
			writeError(w, r, http.StatusBadRequest, "BadRequest", "Invalid $top value '"+top+"'.")
			return
		}
		if n > 0 && n < size {
			size = n
		}
	}
	offset := 0
	if tok := q.Get("$skiptoken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		off, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "o="))
		if err != nil || err2 != nil || off < 0 {
			writeError(w, r, http.StatusBadRequest, "BadRequest", "Invalid $skiptoken.")
			return
		}
		offset = min(off, n)
	}
	end := min(offset+size, n)
	page := make([]map[string]any, 0, end-offset)
	for i := offset; i < end; i++ {
		sel, bad := selectProps(item(i), q.Get("$select"))
		if sel == nil {
			writeError(w, r, http.StatusBadRequest, "BadRequest", bad)
			return
		}
		page = append(page, sel)
	}
	body := map[string]any{
		"@odata.context": graphRoot + context,
		"@odata.count":   n,
		"value":          page,
	}
	if end < n {
		var keep []string
		for _, p := range strings.Split(r.URL.RawQuery, "&") {
			if p != "" && !strings.HasPrefix(p, "$skiptoken=") && !strings.HasPrefix(p, "%24skiptoken=") {
				keep = append(keep, p)
			}
		}
		keep = append(keep, "$skiptoken="+base64.RawURLEncoding.EncodeToString([]byte("o="+strconv.Itoa(end))))
		body["@odata.nextLink"] = "http://" + r.Host + r.URL.Path + "?" + strings.Join(keep, "&")
	}
	writeJSON(w, r, http.StatusOK, body)
}

// device returns the device with id (any case), or nil.
func (s *Server) device(id string) *Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.byID[strings.ToLower(id)]
	if !ok {
		return nil
	}
	d := s.tenant.Devices[i]
	return &d
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request, id string, coManaged bool) {
	d := s.device(id)
	if d == nil || (coManaged && !d.CoManaged) {
		writeError(w, r, http.StatusNotFound, "ResourceNotFound", "Resource '"+id+"' does not exist or one of its queried reference-property objects are not present.")
		return
	}
	all := deviceProps(d)
	all["deviceActionResults"] = s.actionResults(d)
	props, bad := selectProps(all, r.URL.Query().Get("$select"))
	if props == nil {
		writeError(w, r, http.StatusBadRequest, "BadRequest", bad)
		return
	}
	props["@odata.context"] = graphRoot + "deviceManagement/managedDevices/$entity"
	writeJSON(w, r, http.StatusOK, props)
}

// trigger implements initiateOnDemandProactiveRemediation.
func (s *Server) trigger(w http.ResponseWriter, r *http.Request, body []byte, id string, coManaged bool) {
	var req map[string]json.RawMessage
	var script string
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, r, http.StatusBadRequest, "BadRequest", "Empty Payload. JSON content expected.")
		return
	}
	for k := range req {
		if k != "scriptPolicyId" {
			writeError(w, r, http.StatusBadRequest, "BadRequest", "The parameter '"+k+"' in the request payload is not a valid parameter for the operation 'initiateOnDemandProactiveRemediation'.")
			return
		}
	}
	if err := json.Unmarshal(req["scriptPolicyId"], &script); err != nil || script == "" {
		writeError(w, r, http.StatusBadRequest, "BadRequest", "The parameter 'scriptPolicyId' is required and must be a string.")
		return
	}
	d := s.device(id)
	if d == nil || (coManaged && !d.CoManaged) {
		writeIntuneError(w, r, http.StatusNotFound, "ResourceNotFound", "Resource not found for managedDevice '"+id+"'")
		return
	}
	if !strings.EqualFold(d.OperatingSystem, "Windows") {
		writeIntuneError(w, r, http.StatusBadRequest, "BadRequest", "The requested action is not supported for this platform")
		return
	}
	sc := s.script(script)
	if sc == nil {
		writeIntuneError(w, r, http.StatusNotFound, "ResourceNotFound", "DeviceHealthScript '"+script+"' not found")
		return
	}
	s.recordTrigger(d, sc)
	setRequestIDs(w, r)
	w.WriteHeader(http.StatusNoContent)
}

// actionResults renders deviceActionResults: like Intune, only the last
// on-demand remediation of the device is kept, pending until its run
// state is final.
func (s *Server) actionResults(d *Device) []map[string]any {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.lastRun[strings.ToLower(d.ID)]
	if last == nil {
		return []map[string]any{}
	}
	state, updated := "pending", last.triggeredAt
	if s.finished(last, now) {
		state, updated = "done", last.triggeredAt.Add(s.opts.RunStateDelay)
	}
	return []map[string]any{{"actionName": "initiateOnDemandProactiveRemediation", "actionState": state,
		"startDateTime": rfc3339(last.triggeredAt), "lastUpdatedDateTime": rfc3339(updated)}}
}
