package intunesim

import (
	"net/http"
	"strings"
	"time"
)

// Record is one request the simulator received ($batch items are recorded
// on their own, with InBatch set).
type Record struct {
	Time     time.Time
	Method   string
	Path     string
	RawQuery string
	Header   http.Header
	Body     []byte // after gunzip
	Status   int    // 0 when the connection was dropped
	App      string
	InBatch  bool
	Fault    FaultKind
}

// Counters summarise the traffic so far.
type Counters struct {
	Requests  int // every request and $batch item
	Batches   int // $batch envelopes
	Reads     int // admitted reads (including $batch items)
	Writes    int // admitted writes (including $batch items)
	Throttled int // 429 answers
	Triggers  int // triggers that took effect
}

// Records returns a copy of every request recorded so far.
func (s *Server) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.records...)
}

// Counters returns the traffic counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}

// TriggerCount is how many times the trigger of scriptID on deviceID took
// effect.
func (s *Server) TriggerCount(deviceID, scriptID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.triggers[stateKey{strings.ToLower(deviceID), strings.ToLower(scriptID)}]
}

// TriggeredDevices returns, per lower-case device id, how many triggers
// (of any script) took effect.
func (s *Server) TriggeredDevices() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, n := range s.triggers {
		out[k.device] += n
	}
	return out
}

// Reset forgets recorded requests, counters, triggers, run states and
// throttling history; the tenant and injected faults stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = nil
	s.counters = Counters{}
	s.triggers = map[stateKey]int{}
	s.states = map[stateKey]*runState{}
	s.lastRun = map[string]*runState{}
	s.windows = map[string]*window{}
}

// Tenant returns the simulated tenant. Callers must not modify it.
func (s *Server) Tenant() *Tenant { return s.tenant }
