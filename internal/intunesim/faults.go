package intunesim

import (
	"net/http"
	"strings"
	"time"
)

// FaultKind names a failure the simulator can inject.
type FaultKind string

// The faults a Server can inject.
const (
	Fault500          FaultKind = "500"           // Intune-style InternalError (embedded JSON message)
	Fault503          FaultKind = "503"           // ServiceUnavailable
	Fault504          FaultKind = "504"           // GatewayTimeout
	FaultEmptyJSON    FaultKind = "empty_json"    // 500 with body {} (no error object)
	FaultTextPlain    FaultKind = "text_plain"    // 502 with a text/plain body
	FaultHTML         FaultKind = "html"          // 502 with an HTML gateway page
	FaultLatency      FaultKind = "latency"       // delay, then the normal answer
	FaultDropBefore   FaultKind = "drop_before"   // connection dropped; the request had no effect
	FaultDropAfter    FaultKind = "drop_after"    // request took effect, then the connection dropped
	FaultExpiredToken FaultKind = "expired_token" // 401 InvalidAuthenticationToken
	FaultThrottle     FaultKind = "throttle"      // 429 regardless of the budget
)

// Fault is an injected failure.
type Fault struct {
	Kind FaultKind
	// Status overrides the HTTP status of body faults (500, 503, 504,
	// empty_json, text_plain, html).
	Status int
	// Latency is the delay of FaultLatency (default 2 s) and the
	// Retry-After of FaultThrottle (default a tenth of the window).
	Latency time.Duration
	// Times is how many matching requests get the fault; 0 means all.
	Times int
	// Method limits the fault to one HTTP method ("" matches any).
	Method string
	used   int
}

// InjectFault makes requests that name deviceID (GET, trigger, $batch
// items) fail as f says. Faults for one device are used in the order given.
func (s *Server) InjectFault(deviceID string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(deviceID)
	s.faults[key] = append(s.faults[key], &f)
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[string][]*Fault{}
}

// fault returns the fault for this request, if any: an injected one for the
// device first, else a random one at FaultRate.
func (s *Server) fault(deviceID, method string) *Fault {
	if deviceID == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.faults[strings.ToLower(deviceID)] {
		if f.Method != "" && f.Method != method {
			continue
		}
		if f.Times > 0 && f.used >= f.Times {
			continue
		}
		f.used++
		return f
	}
	if s.opts.FaultRate > 0 && len(s.opts.FaultKinds) > 0 && s.rnd.Float64() < s.opts.FaultRate {
		return &Fault{Kind: s.opts.FaultKinds[s.rnd.IntN(len(s.opts.FaultKinds))]}
	}
	return nil
}

// applyFault answers the request as the fault says. It reports whether the
// request is finished (false: handle it normally, for latency and
// drop_after).
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f *Fault, inBatch bool) bool {
	status := func(def int) int {
		if f.Status != 0 {
			return f.Status
		}
		return def
	}
	switch f.Kind {
	case Fault500:
		writeIntuneError(w, r, status(500), "InternalError", "An error has occurred")
	case Fault503:
		writeIntuneError(w, r, status(503), "CancelledOnServiceTimeout", "The operation was cancelled on service timeout")
	case Fault504:
		writeError(w, r, status(504), "GatewayTimeout", "The gateway did not receive a response in time.")
	case FaultEmptyJSON:
		setRequestIDs(w, r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status(500))
		_, _ = w.Write([]byte(`{}`))
	case FaultTextPlain:
		setRequestIDs(w, r)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status(502))
		_, _ = w.Write([]byte("upstream connect error or disconnect/reset before headers"))
	case FaultHTML:
		setRequestIDs(w, r)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status(502))
		_, _ = w.Write([]byte("<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"))
	case FaultExpiredToken:
		writeError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
	case FaultThrottle:
		wait := f.Latency
		if wait <= 0 {
			wait = s.opts.Window / 10
		}
		writeThrottled(w, r, s.opts.RetryAfter, wait)
	case FaultLatency:
		d := f.Latency
		if d <= 0 {
			d = 2 * time.Second
		}
		return !sleep(r.Context(), d)
	case FaultDropBefore:
		abort(r)
	case FaultDropAfter:
		return false
	}
	return true
}
