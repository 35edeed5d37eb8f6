package intunesim

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// RetryAfterMode says how a 429 announces when to come back.
type RetryAfterMode string

// Retry-After styles seen from Graph and Intune.
const (
	RetryAfterSeconds    RetryAfterMode = "seconds"    // "Retry-After: 2"
	RetryAfterFractional RetryAfterMode = "fractional" // "Retry-After: 2.128"
	RetryAfterNone       RetryAfterMode = "none"       // no header, as Intune often answers
)

// Options configures a Server. The zero value behaves like real Intune with
// its documented limits.
type Options struct {
	// WriteLimit and ReadLimit are the per-app budgets per Window (Intune:
	// 200 POST/PUT/PATCH/DELETE and 2,000 requests of any kind per 20 s).
	WriteLimit, ReadLimit int
	// TenantWriteLimit and TenantReadLimit are the budgets of all apps
	// together (Intune: 400 and 4,000 per 20 s).
	TenantWriteLimit, TenantReadLimit int
	// Window is the throttling window; shorten it to compress time in
	// benchmarks. Default 20 s.
	Window time.Duration
	// RetryAfter selects the Retry-After style of 429 answers.
	RetryAfter RetryAfterMode
	// PageSize is the largest page of a collection. Default 1000.
	PageSize int
	// StrictFilters turns off Intune's $filter quirks: unsupported filters
	// are answered with 400 instead of being ignored, ne is honoured and
	// in (...) is evaluated.
	StrictFilters bool
	// LenientGzip accepts a body labelled gzip that is not gzip (the kiota
	// retry bug) as plain JSON; by default it is rejected with 400 as Graph
	// does.
	LenientGzip bool
	// RunStateDelay is how long a triggered device stays pending before its
	// run state becomes final. Default 2 s.
	RunStateDelay time.Duration
	// ScriptFailure sets, by lower-case script id, the share of devices
	// whose run of that script fails (remediation failed or script
	// error); the others end no issue or remediated. A script not listed
	// has FinalOutcome's mix (one in five fails).
	ScriptFailure map[string]float64
	// Offline is the share of devices that never report a script's
	// result: they stay pending.
	Offline float64
	// Latency is added to every request.
	Latency time.Duration
	// FaultRate is the probability that a request about a device gets one
	// of FaultKinds (chosen at random, seeded by FaultSeed).
	FaultRate  float64
	FaultKinds []FaultKind
	FaultSeed  uint64
	// Authorize, when set, checks the bearer token of each request and
	// names the calling app; a false answer is a 401. When nil every
	// request is accepted and the app is taken from the X-Sim-App header,
	// else from the token, else "anonymous".
	Authorize func(token string) (app string, ok bool)
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (o *Options) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.WriteLimit, 200)
	def(&o.ReadLimit, 2000)
	def(&o.TenantWriteLimit, 2*o.WriteLimit)
	def(&o.TenantReadLimit, 2*o.ReadLimit)
	def(&o.PageSize, 1000)
	if o.Window <= 0 {
		o.Window = 20 * time.Second
	}
	if o.RetryAfter == "" {
		o.RetryAfter = RetryAfterSeconds
	}
	if o.RunStateDelay <= 0 {
		o.RunStateDelay = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Server simulates the Graph beta endpoints for one tenant. It is safe for
// concurrent use.
type Server struct {
	opts Options

	mu      sync.Mutex
	tenant  *Tenant
	byID    map[string]int // lower-case device id → index in tenant.Devices
	scripts map[string]int // lower-case script id → index in tenant.Scripts
	states  map[stateKey]*runState
	// lastRun is each device's latest on-demand run (lower-case id), what
	// deviceActionResults shows.
	lastRun  map[string]*runState
	triggers map[stateKey]int
	faults   map[string][]*Fault
	rnd      *rand.Rand
	windows  map[string]*window
	records  []Record
	counters Counters
}

// New returns a Server serving tenant with opts.
func New(tenant *Tenant, opts Options) *Server {
	opts.defaults()
	tenant.sort()
	s := &Server{
		opts:     opts,
		tenant:   tenant,
		byID:     make(map[string]int, len(tenant.Devices)),
		scripts:  make(map[string]int, len(tenant.Scripts)),
		states:   map[stateKey]*runState{},
		lastRun:  map[string]*runState{},
		triggers: map[stateKey]int{},
		faults:   map[string][]*Fault{},
		rnd:      rand.New(rand.NewPCG(opts.FaultSeed, 7)),
		windows:  map[string]*window{},
	}
	for i, d := range tenant.Devices {
		s.byID[strings.ToLower(d.ID)] = i
	}
	for i, sc := range tenant.Scripts {
		s.scripts[strings.ToLower(sc.ID)] = i
	}
	return s
}

// Running is a Server listening on loopback.
type Running struct {
	*Server
	// URL is the Graph base URL to give clients, e.g.
	// http://127.0.0.1:41234/beta.
	URL string
	srv *http.Server
	ln  net.Listener
}

// Start serves s on addr (use "127.0.0.1:0" for any free port) until Close.
func Start(s *Server, addr string) (*Running, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Running{
		Server: s,
		URL:    "http://" + ln.Addr().String() + "/beta",
		srv:    &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second},
		ln:     ln,
	}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// Close stops the simulator at once, closing every connection.
func (r *Running) Close() error { return r.srv.Close() }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, false)
}

// serve runs the pipeline every request (and every $batch item) goes
// through: read the body, authenticate, throttle, inject faults, handle.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, inBatch bool) {
	rec := Record{
		Time:     s.opts.Now(),
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		InBatch:  inBatch,
	}
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		rec.Status = sw.status
		s.mu.Lock()
		s.records = append(s.records, rec)
		s.counters.Requests++
		if rec.Status == http.StatusTooManyRequests {
			s.counters.Throttled++
		}
		s.mu.Unlock()
	}()
	if s.opts.Latency > 0 && !inBatch {
		if !sleep(r.Context(), s.opts.Latency) {
			return
		}
	}
	body, err := readBody(r, s.opts.LenientGzip)
	rec.Body = body
	if err != nil {
		writeError(sw, r, http.StatusBadRequest, "BadRequest", "Invalid Data. "+err.Error())
		return
	}
	app, ok := s.authorize(r)
	rec.App = app
	if !ok {
		writeError(sw, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token is empty or invalid.")
		return
	}
	rt, found := s.route(r)
	if !found {
		writeError(sw, r, http.StatusNotFound, "BadRequest", "Resource not found for the segment '"+lastSegment(r.URL.Path)+"'.")
		return
	}
	if rt.kind == kindBatch {
		s.serveBatch(sw, r, body)
		return
	}
	at, wait, ok := s.admit(app, rt.kind == kindWrite)
	rec.Time = at
	if !ok {
		writeThrottled(sw, r, s.opts.RetryAfter, wait)
		return
	}
	f := s.fault(rt.deviceID, r.Method)
	if f != nil {
		rec.Fault = f.Kind
		if done := s.applyFault(sw, r, f, inBatch); done {
			return
		}
	}
	rt.handle(sw, r, body)
	if f != nil && f.Kind == FaultDropAfter {
		abort(r)
	}
}

// authorize names the calling app and checks its token.
func (s *Server) authorize(r *http.Request) (string, bool) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if s.opts.Authorize != nil {
		return s.opts.Authorize(token)
	}
	if app := r.Header.Get("X-Sim-App"); app != "" {
		return app, true
	}
	if token != "" {
		return "token:" + shortHash(token), true
	}
	return "anonymous", true
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the first status written.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func lastSegment(p string) string {
	p = strings.TrimSuffix(p, "/")
	return p[strings.LastIndex(p, "/")+1:]
}
