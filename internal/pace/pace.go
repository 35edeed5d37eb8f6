// Package pace keeps Graph traffic under Intune's limits: a process-wide
// token bucket for writes and one for reads, a gate that pauses every
// caller when the service answers 429, Retry-After parsing and capped
// exponential backoff with jitter. Every wait honours its context.
package pace

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Pacer paces Graph calls for a whole process, one budget per tenant
// (For). It is safe for concurrent use; share one between all runs so
// concurrent invocations together stay under each tenant's budget.
type Pacer struct {
	writes *rate.Limiter
	reads  *rate.Limiter
	// writeWait and readWait hand out the tokens: the limiters above, or
	// a shared budget's (WithShared).
	writeWait, readWait waiter
	shared              *SharedOptions

	// fallback is the last time the shared budget could not be reached,
	// and why (FellBackSince).
	fallbackMu  sync.Mutex
	fallbackAt  time.Time
	fallbackErr string
	// notes are things a run's summary should tell (a repaired budget),
	// with when they happened; at most a few are kept.
	notes []timedNote

	mu    sync.Mutex
	until time.Time // every caller waits until then after a 429

	// tenants are the budgets of other tenants (For): Intune's limits are
	// per app and tenant, so one tenant's pace and 429s never hold
	// another's.
	tenantsMu sync.Mutex
	tenants   map[string]*Pacer
}

// New returns a Pacer admitting writesPerSecond writes and readsPerSecond
// reads. Writes have a burst of one so that no interval of length T ever
// holds more than 1 + rate×T writes; reads may burst to a full $batch (20).
func New(writesPerSecond, readsPerSecond float64) *Pacer {
	p := &Pacer{
		writes: rate.NewLimiter(rate.Limit(writesPerSecond), 1),
		reads:  rate.NewLimiter(rate.Limit(readsPerSecond), 20),
	}
	p.writeWait, p.readWait = local(p.writes), local(p.reads)
	return p
}

// localLimiter is a process's own limiter, waited for so that a slot
// found stale after the wait (a freeze, a late timer) is never used.
type localLimiter struct {
	lim   *rate.Limiter
	late  time.Duration
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
}

func local(lim *rate.Limiter) localLimiter {
	spacing := time.Duration(float64(time.Second) / math.Max(float64(lim.Limit()), 0.001))
	return localLimiter{lim: lim, late: max(spacing, 20*time.Millisecond), now: time.Now, sleep: Sleep}
}

// WaitN implements waiter.
func (l localLimiter) WaitN(ctx context.Context, n int) error {
	return localWait(ctx, l.lim, n, l.late, l.now, l.sleep)
}

// localWait takes n tokens of lim and waits for them, like lim.WaitN,
// but a slot found stale when the wait ends (a frozen process, a late
// timer) is not used: another is taken, so that waiters released together
// after a freeze go out at the pace, not at once.
func localWait(ctx context.Context, lim *rate.Limiter, n int, late time.Duration, now func() time.Time, sleep func(context.Context, time.Duration) error) error {
	for {
		t := now()
		r := lim.ReserveN(t, n)
		if !r.OK() {
			return fmt.Errorf("pace: %d tokens exceed the burst of %d", n, lim.Burst())
		}
		due := t.Add(r.DelayFrom(t))
		if err := sleep(ctx, due.Sub(t)); err != nil {
			r.CancelAt(t)
			return err
		}
		if now().Sub(due) <= late {
			return nil
		}
	}
}

// waiter hands out tokens: a rate.Limiter, or a shared budget.
type waiter interface {
	WaitN(ctx context.Context, n int) error
}

// For is the budget of tenant key ("" or the default tenant is p
// itself): the same rates, its own tokens and its own 429 gate.
func (p *Pacer) For(key string) *Pacer {
	key = strings.ToLower(key)
	if key == "" || (p.shared != nil && key == p.shared.DefaultTenant) {
		return p
	}
	p.tenantsMu.Lock()
	defer p.tenantsMu.Unlock()
	if t, ok := p.tenants[key]; ok {
		return t
	}
	if p.tenants == nil {
		p.tenants = map[string]*Pacer{}
	}
	t := &Pacer{writes: rate.NewLimiter(p.writes.Limit(), p.writes.Burst()), reads: rate.NewLimiter(p.reads.Limit(), p.reads.Burst()), shared: p.shared}
	t.writeWait, t.readWait = local(t.writes), local(t.reads)
	t.share(key)
	p.tenants[key] = t
	return t
}

// WriteRate is the configured write rate per second.
func (p *Pacer) WriteRate() float64 { return float64(p.writes.Limit()) }

// Write waits for the throttle gate and a write token. It returns how long
// it waited, or the context's error (also when the wait could not end
// before the context's deadline).
func (p *Pacer) Write(ctx context.Context) (time.Duration, error) {
	return p.wait(ctx, p.writeWait, 1)
}

// Read waits for the throttle gate and n read tokens (n ≤ 20).
func (p *Pacer) Read(ctx context.Context, n int) (time.Duration, error) {
	return p.wait(ctx, p.readWait, min(max(n, 1), 20))
}

func (p *Pacer) wait(ctx context.Context, l waiter, n int) (time.Duration, error) {
	start := time.Now()
	if _, err := p.gate(ctx); err != nil {
		return time.Since(start), err
	}
	for {
		if err := l.WaitN(ctx, n); err != nil {
			return time.Since(start), err
		}
		// A 429 that arrived while this caller waited for its slot holds it
		// too: the gate is checked again after the slot, not only before.
		// A caller held there takes a new slot when the pause ends, so
		// that the callers a pause held resume at the pace, not at once.
		held, err := p.gate(ctx)
		if err != nil || !held {
			return time.Since(start), err
		}
	}
}

type timedNote struct {
	at  time.Time
	msg string
}

// note records msg for the summaries of the runs under way.
func (p *Pacer) note(msg string) {
	p.fallbackMu.Lock()
	defer p.fallbackMu.Unlock()
	p.notes = append(p.notes, timedNote{time.Now(), msg})
	if len(p.notes) > 8 {
		p.notes = p.notes[len(p.notes)-8:]
	}
}

// NotesSince returns the notes recorded since t, each once.
func (p *Pacer) NotesSince(t time.Time) []string {
	p.fallbackMu.Lock()
	defer p.fallbackMu.Unlock()
	var out []string
	for _, n := range p.notes {
		if !n.at.Before(t) && !slices.Contains(out, n.msg) {
			out = append(out, n.msg)
		}
	}
	return out
}

// fellBack records that the shared budget could not be reached.
func (p *Pacer) fellBack(err error) {
	p.fallbackMu.Lock()
	defer p.fallbackMu.Unlock()
	p.fallbackAt, p.fallbackErr = time.Now(), err.Error()
}

// FellBackSince reports whether, since t, this budget had to pace itself
// at its local share because the shared budget could not be reached, and
// why.
func (p *Pacer) FellBackSince(t time.Time) (string, bool) {
	p.fallbackMu.Lock()
	defer p.fallbackMu.Unlock()
	return p.fallbackErr, !p.fallbackAt.Before(t) && !p.fallbackAt.IsZero()
}

// PausedFor is how long the 429 gate stays closed from now (0 when open).
func (p *Pacer) PausedFor() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(time.Until(p.until), 0)
}

// Gate waits until no 429 pause is in force. A pause extended while
// waiting is waited for too.
func (p *Pacer) Gate(ctx context.Context) error {
	_, err := p.gate(ctx)
	return err
}

// gate is Gate, reporting whether it had to wait.
func (p *Pacer) gate(ctx context.Context) (bool, error) {
	held := false
	for {
		p.mu.Lock()
		d := time.Until(p.until)
		p.mu.Unlock()
		if d <= 0 {
			return held, ctx.Err()
		}
		held = true
		if err := Sleep(ctx, d); err != nil {
			return held, err
		}
	}
}

// Pause makes every caller wait d from now (a pause is only ever
// extended, never shortened).
func (p *Pacer) Pause(d time.Duration) {
	p.pause(d)
}

// pause extends the pause to d from now; it reports whether the gate was
// open before, and by how much the pause grew.
func (p *Pacer) pause(d time.Duration) (wasOpen bool, by time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	wasOpen = !p.until.After(now)
	until := now.Add(d)
	if !until.After(p.until) {
		return wasOpen, 0
	}
	from := now
	if !wasOpen {
		from = p.until
	}
	p.until = until
	return wasOpen, until.Sub(from)
}

// Throttled is Pause for a 429 Graph answered: with a shared budget, the
// pause and a halved rate are also written to the budget, so that every
// process of the deployment honours them, not only this one.
func (p *Pacer) Throttled(d time.Duration) {
	// The concurrent calls a 429 storm throttles each report it: the
	// budget is written by the first, and by a later one only when it
	// lengthens the pause by more than a second, not once per call.
	if wasOpen, by := p.pause(d); !wasOpen && by <= time.Second {
		return
	}
	for _, w := range []waiter{p.writeWait, p.readWait} {
		if l, ok := w.(*sharedLimiter); ok {
			go l.throttled(d)
		}
	}
}

// Sleep waits d or until ctx is done, whichever is first; it returns the
// context's error if the context ended the wait, also when the context's
// deadline falls before d has passed.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		// Waiting would outlive the caller: fail now, so the time left
		// can go to writing the summary.
		return context.DeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RetryAfter parses a Retry-After value: delta seconds, including the
// fractional form Graph sends ("2.128"), or an HTTP date. It reports false
// for an absent or malformed value; a date in the past is zero.
func RetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, false
		}
		return time.Duration(math.Min(f, 24*3600) * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// Backoff is the wait before retry number attempt (1 for the first retry):
// base·2^(attempt-1) capped at ceiling, with "equal jitter" (half fixed,
// half random) so that synchronized callers spread out.
func Backoff(attempt int, base, ceiling time.Duration) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := ceiling
	if attempt < 32 {
		d = min(base<<(attempt-1), ceiling)
	}
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(half+1)
}
