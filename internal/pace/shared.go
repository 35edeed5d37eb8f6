package pace

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Shared is a budget kept outside the process and shared by every process
// of a deployment (internal/azstore keeps it in Azure Storage). A budget
// is a timeline of positions 1/rate apart (position i falls at i/rate
// after the Unix epoch); Claim hands out positions no other process
// holds, so the processes together use each position once and their calls
// follow one timeline at the budget's rate, whatever their number.
type Shared interface {
	// Claim takes want consecutive positions of the budget key, none
	// below from and none beyond from+horizon. It returns the first
	// position taken and how many (0 when every position up to the horizon
	// is taken).
	Claim(ctx context.Context, key string, from int64, want int, horizon int64) (first int64, got int, err error)
}

// SharedOptions configures WithShared.
type SharedOptions struct {
	// Store keeps the budget.
	Store Shared
	// Scope names the app registration whose budget this is (Intune's
	// limits are per app and tenant): budget keys are scope|tenant|kind.
	Scope string
	// Horizon is how far ahead a process may claim positions (default
	// 10 s): a process with more waiting calls waits for time to pass.
	Horizon time.Duration
	// Processes is how many processes may share the budget at most: when
	// the store cannot be reached a process paces itself at 1/Processes of
	// the rate, so even every process cut off at once stays under it.
	Processes int
	// Retry is how long a process keeps to its local share after the store
	// failed before trying it again (default 5 s).
	Retry time.Duration
	// CallTimeout bounds one claim (default 2 s): a store that hangs
	// costs two of these (one slow answer is not an outage), then the
	// local share.
	CallTimeout time.Duration
	// DefaultTenant is the tenant id of requests that name none: its
	// budget is the same whether a request names it or not.
	DefaultTenant string
}

// Budget kinds.
const (
	kindWrite = "w"
	kindRead  = "r"
)

// WithShared makes p, and every tenant budget For returns, take its tokens
// from the shared store instead of from the process alone. Call it before
// p is used.
func (p *Pacer) WithShared(o SharedOptions) *Pacer {
	if o.Horizon <= 0 {
		o.Horizon = 10 * time.Second
	}
	if o.Processes < 1 {
		o.Processes = 1
	}
	if o.Retry <= 0 {
		o.Retry = 5 * time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 2 * time.Second
	}
	o.DefaultTenant = strings.ToLower(o.DefaultTenant)
	p.shared = &o
	p.share(cmp.Or(o.DefaultTenant, "default"))
	return p
}

// share replaces p's local limiters by shared ones for tenant.
func (p *Pacer) share(tenant string) {
	o := p.shared
	if o == nil {
		return
	}
	key := strings.ToLower(o.Scope + "|" + tenant + "|")
	p.writeWait = newSharedLimiter(o, key+kindWrite, float64(p.writes.Limit()), p.writes.Burst(), p)
	p.readWait = newSharedLimiter(o, key+kindRead, float64(p.reads.Limit()), p.reads.Burst(), p)
}

// sharedLimiter hands out the positions of a shared budget.
type sharedLimiter struct {
	o       *SharedOptions
	key     string
	spacing time.Duration // between positions: 1/rate
	horizon int64         // positions a claim may reach ahead of now
	ahead   int           // positions claimed at least (half a second's)
	late    time.Duration // how late a held position may still be used
	local   *rate.Limiter // the share used while the store is down
	owner   *Pacer
	// now and sleep are the clock (tests replace them to freeze the
	// process between a wait and the call it admits).
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	// claiming admits one claim at a time for this budget (a channel, so
	// that a waiter behind it gives up with its context).
	claiming chan struct{}

	mu   sync.Mutex
	held []int64 // claimed positions not yet used, earliest first
	// lead is how long claims take lately: a claim asks for positions from
	// now+lead on, so that they are not past when it returns.
	lead    time.Duration
	waiting int
	down    time.Time // the store failed: local share until then
	// prefetching is set while a claim ahead of need is under way.
	prefetching bool
	// failures counts the claims that failed in a row.
	failures int
	// claims counts the claims made; lastErr is the last one's error: a
	// waiter that waited behind a failed claim does not call the store
	// again (one claimer per process and budget).
	claims  int
	lastErr error
}

// errStoreDown is the error of a claim not made because the store was
// found down moments ago.
var errStoreDown = errors.New("shared Graph budget: storage is down; using the local share")

// ErrContended is what a Shared store's Claim returns (wrapped) when its
// time ran out while other processes kept winning the budget's row: the
// store answers, it is only busy, so this is no outage.
var ErrContended = errors.New("shared Graph budget: the budget's row is contended")

func newSharedLimiter(o *SharedOptions, key string, perSecond float64, burst int, owner *Pacer) *sharedLimiter {
	perSecond = max(perSecond, 0.001)
	spacing := time.Duration(float64(time.Second) / perSecond)
	return &sharedLimiter{
		o: o, key: key, spacing: spacing,
		horizon: max(1, int64(o.Horizon/spacing)),
		ahead:   max(1, int(math.Ceil(perSecond/2))),
		// A late position is used at once: at most this late, so that a
		// window of Intune's holds at most rate×(window+late) calls.
		late:     max(spacing, 20*time.Millisecond),
		local:    rate.NewLimiter(rate.Limit(perSecond/float64(o.Processes)), burst),
		owner:    owner,
		now:      time.Now,
		sleep:    Sleep,
		claiming: make(chan struct{}, 1),
	}
}

// at is when position pos falls due.
func (l *sharedLimiter) at(pos int64) time.Time { return time.Unix(0, pos*int64(l.spacing)) }

// WaitN waits for n positions and until the last of them falls due. A
// position found stale when the wait ends (the process was frozen, or a
// timer fired late) is dropped and another taken: calls never go out late
// in a bunch.
func (l *sharedLimiter) WaitN(ctx context.Context, n int) error {
	l.mu.Lock()
	l.waiting++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.waiting--
		l.mu.Unlock()
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := l.now()
		l.mu.Lock()
		if now.Before(l.down) {
			l.mu.Unlock()
			return localWait(ctx, l.local, n, l.late, l.now, l.sleep)
		}
		l.dropLate(now)
		want := l.want(n)
		if len(l.held) >= n {
			due := l.at(l.held[n-1])
			l.held = l.held[n:]
			// Claim the next positions before these run out, so that the
			// time a claim takes is not a gap in the pace.
			if !l.prefetching && (len(l.held) == 0 || l.at(l.held[len(l.held)-1]).Before(now.Add(2*l.lead+l.spacing))) {
				l.prefetching = true
				go l.prefetch(want)
			}
			l.mu.Unlock()
			if err := l.sleep(ctx, due.Sub(now)); err != nil {
				return err
			}
			if l.now().Sub(due) > l.late {
				continue // stale after the wait: take a position that is not
			}
			return nil
		}
		l.mu.Unlock()
		progressed, err := l.claim(ctx, want)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			// counted by claim; the next round finds the store down, or
			// tries it again
		case !progressed:
			// Every position up to the horizon is taken, or the row was
			// contended: let time pass.
			if err := l.sleep(ctx, min(l.o.Horizon/4, max(l.spacing, 100*time.Millisecond))); err != nil {
				return err
			}
		}
	}
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

// want is how many positions to hold after a claim for n (l.mu held): the
// waiters', at least half a second's, and enough to cover the time the
// next claim takes.
func (l *sharedLimiter) want(n int) int {
	cover := int(2 * l.lead / l.spacing)
	return min(max(n, l.waiting, l.ahead, cover), int(l.horizon))
}

// prefetch claims positions ahead of need, off the waiters' path.
func (l *sharedLimiter) prefetch(want int) {
	defer func() {
		l.mu.Lock()
		l.prefetching = false
		l.mu.Unlock()
	}()
	l.mu.Lock()
	want += len(l.held)
	l.mu.Unlock()
	_, _ = l.claim(context.Background(), want) // a failure is counted by claim
}

// dropLate forgets held positions too far in the past (l.mu held).
func (l *sharedLimiter) dropLate(now time.Time) {
	i := 0
	for i < len(l.held) && now.Sub(l.at(l.held[i])) > l.late {
		i++
	}
	l.held = l.held[i:]
}

// claim takes want positions, after those held, from the store; it
// reports false when it found none before the horizon.
func (l *sharedLimiter) claim(ctx context.Context, want int) (bool, error) {
	l.mu.Lock()
	seen := l.claims
	l.mu.Unlock()
	select {
	case l.claiming <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-l.claiming }()
	l.mu.Lock()
	l.dropLate(l.now())
	switch {
	case len(l.held) >= want:
		l.mu.Unlock()
		return true, nil // another waiter's claim brought them
	case l.now().Before(l.down):
		l.mu.Unlock()
		return false, errStoreDown
	case l.claims != seen && l.lastErr != nil:
		// The claim this waiter waited behind failed: it does not ask the
		// store again; the claimer's next try, or the local share, serves
		// it.
		err := l.lastErr
		l.mu.Unlock()
		return false, err
	}
	began := time.Now()
	from := (began.Add(l.lead).UnixNano() + int64(l.spacing) - 1) / int64(l.spacing)
	if len(l.held) > 0 {
		from = max(from, l.held[len(l.held)-1]+1)
	}
	want -= len(l.held)
	l.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, l.o.CallTimeout)
	first, got, err := l.o.Store.Claim(cctx, l.key, from, want, l.horizon)
	cancel()
	took := min(time.Since(began), l.o.Horizon/4)
	if errors.Is(err, ErrContended) && ctx.Err() == nil {
		err = nil // busy, not down: no positions this time
	}
	l.mu.Lock()
	l.lead = (3*l.lead + took) / 4
	l.claims++
	l.lastErr = nil
	wentDown := false
	if err != nil {
		// The second store call in a row that fails (a store down, not one
		// slow answer) switches to the local share for a while.
		err = fmt.Errorf("shared Graph budget: %w", err)
		l.lastErr, l.failures = err, l.failures+1
		if wentDown = l.failures >= 2; wentDown {
			l.failures, l.down = 0, l.now().Add(l.o.Retry)
		}
	} else {
		l.failures = 0
	}
	l.mu.Unlock()
	if wentDown {
		l.owner.fellBack(err)
	}
	if err != nil {
		return false, err
	}
	l.mu.Lock()
	for i := range int64(got) {
		l.held = append(l.held, first+i)
	}
	l.mu.Unlock()
	return got > 0, nil
}
