package intunesim

import (
	"strings"
	"time"
)

// window is a sliding-window request log: it admits a request when fewer
// than limit requests were admitted in the last width, so no interval of
// that length ever holds more than limit admitted requests.
type window struct {
	times []time.Time // admitted times, oldest first
}

// wait reports how long until one more request fits, or 0 if it fits now.
func (w *window) wait(now time.Time, width time.Duration, limit int) time.Duration {
	cut := 0
	for cut < len(w.times) && !w.times[cut].After(now.Add(-width)) {
		cut++
	}
	w.times = w.times[cut:]
	if len(w.times) < limit {
		return 0
	}
	return w.times[len(w.times)-limit].Add(width).Sub(now)
}

// TenantOf is the tenant of an app as Options.Authorize names it:
// "<tenant>|<client>" (what azurefake.Entra's tokens name) is app client
// in tenant; any other name is an app of the one default tenant. Each
// tenant has its own budgets, as in Intune.
func TenantOf(app string) string {
	if t, _, ok := strings.Cut(app, "|"); ok {
		return t
	}
	return ""
}

// admit counts one request of app against the app's and the tenant's
// budgets at the current time, which it returns. It returns false and the
// time to wait when either is spent; rejected requests do not use budget.
func (s *Server) admit(app string, write bool) (time.Time, time.Duration, bool) {
	kind, appLimit, tenantLimit := "read", s.opts.ReadLimit, s.opts.TenantReadLimit
	if write {
		kind, appLimit, tenantLimit = "write", s.opts.WriteLimit, s.opts.TenantWriteLimit
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	// Every request counts against the "any request" budget; writes also
	// against the write budget.
	type check struct {
		key   string
		limit int
	}
	tenant := TenantOf(app)
	checks := []check{{"app:any:" + app, s.opts.ReadLimit}, {"tenant:any:" + tenant, s.opts.TenantReadLimit}}
	if write {
		checks = append(checks, check{"app:" + kind + ":" + app, appLimit}, check{"tenant:" + kind + ":" + tenant, tenantLimit})
	}
	var longest time.Duration
	for _, c := range checks {
		w := s.windows[c.key]
		if w == nil {
			w = &window{}
			s.windows[c.key] = w
		}
		if d := w.wait(now, s.opts.Window, c.limit); d > longest {
			longest = d
		}
	}
	if longest > 0 {
		return now, longest, false
	}
	for _, c := range checks {
		w := s.windows[c.key]
		w.times = append(w.times, now)
	}
	if write {
		s.counters.Writes++
	} else {
		s.counters.Reads++
	}
	return now, 0, true
}

// MaxInWindow is the most of times within any window of length w (times
// in any order): what a sliding-window limit such as Intune's counts, for
// checking a client's traffic against it.
func MaxInWindow(times []time.Time, w time.Duration) int {
	best := 0
	for i := range times {
		n := 0
		for _, u := range times {
			if !u.Before(times[i]) && u.Before(times[i].Add(w)) {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}
