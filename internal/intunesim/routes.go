package intunesim

import (
	"net/http"
	"strings"
)

type routeKind int

const (
	kindRead routeKind = iota
	kindWrite
	kindBatch
)

type route struct {
	kind     routeKind
	deviceID string // the device the request is about, for faults
	handle   func(w http.ResponseWriter, r *http.Request, body []byte)
}

// route maps a request to its handler. Paths are case-sensitive, as Intune's
// are.
func (s *Server) route(r *http.Request) (route, bool) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/beta/")
	if !ok {
		return route{}, false
	}
	if rest == "$batch" && r.Method == http.MethodPost {
		return route{kind: kindBatch}, true
	}
	seg := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if len(seg) == 4 && seg[0] == "groups" && seg[2] == "transitiveMembers" && r.Method == http.MethodGet &&
		(seg[3] == "microsoft.graph.device" || seg[3] == "graph.device") {
		id := seg[1]
		return route{handle: func(w http.ResponseWriter, r *http.Request, _ []byte) { s.groupDevices(w, r, id) }}, true
	}
	if len(seg) < 2 || seg[0] != "deviceManagement" {
		return route{}, false
	}
	get := r.Method == http.MethodGet
	switch coll, key := keySegment(seg[1]); coll {
	case "managedDevices", "comanagedDevices":
		co := coll == "comanagedDevices"
		if key != "" {
			seg = append([]string{seg[0], coll, key}, seg[2:]...)
		}
		switch {
		case len(seg) == 2 && get && !co:
			return route{handle: s.listDevices}, true
		case len(seg) == 3 && get:
			id := seg[2]
			return route{deviceID: id, handle: func(w http.ResponseWriter, r *http.Request, _ []byte) { s.getDevice(w, r, id, co) }}, true
		case len(seg) == 4 && get && seg[3] == "deviceHealthScriptStates":
			id := seg[2]
			return route{deviceID: id, handle: func(w http.ResponseWriter, r *http.Request, _ []byte) { s.deviceScriptStates(w, r, id) }}, true
		case len(seg) == 4 && r.Method == http.MethodPost && seg[3] == "initiateOnDemandProactiveRemediation":
			id := seg[2]
			return route{kind: kindWrite, deviceID: id, handle: func(w http.ResponseWriter, r *http.Request, body []byte) { s.trigger(w, r, body, id, co) }}, true
		}
	case "deviceHealthScripts":
		switch {
		case len(seg) == 2 && get:
			return route{handle: s.listScripts}, true
		case len(seg) == 3 && get:
			id := seg[2]
			return route{handle: func(w http.ResponseWriter, r *http.Request, _ []byte) { s.getScript(w, r, id) }}, true
		case len(seg) == 4 && get && seg[3] == "deviceRunStates":
			id := seg[2]
			return route{handle: func(w http.ResponseWriter, r *http.Request, _ []byte) { s.scriptRunStates(w, r, id) }}, true
		}
	}
	return route{}, false
}

// keySegment splits the OData key syntax managedDevices('id') into the
// collection and the key.
func keySegment(s string) (coll, key string) {
	i := strings.Index(s, "(")
	if i < 0 || !strings.HasSuffix(s, ")") {
		return s, ""
	}
	return s[:i], strings.Trim(s[i+1:len(s)-1], "'")
}
