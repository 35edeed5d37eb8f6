package pace

import (
	"cmp"
	"context"
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

	claimMu sync.Mutex // one claim at a time for this budget

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
}

func newSharedLimiter(o *SharedOptions, key string, perSecond float64, burst int, owner *Pacer) *sharedLimiter {
	perSecond = max(perSecond, 0.001)
	spacing := time.Duration(float64(time.Second) / perSecond)
	return &sharedLimiter{
		o: o, key: key, spacing: spacing,
		horizon: max(1, int64(o.Horizon/spacing)),
		ahead:   max(1, int(math.Ceil(perSecond/2))),
		// A late position is used at once: at most this late, so that a
		// window of Intune's holds at most rate×(window+late) calls.
		late:  max(spacing, 20*time.Millisecond),
		local: rate.NewLimiter(rate.Limit(perSecond/float64(o.Processes)), burst),
		owner: owner,
	}
}

// at is when position pos falls due.
func (l *sharedLimiter) at(pos int64) time.Time { return time.Unix(0, pos*int64(l.spacing)) }

// WaitN waits for n positions and until the last of them falls due.
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
		now := time.Now()
		l.mu.Lock()
		if now.Before(l.down) {
			l.mu.Unlock()
			return l.local.WaitN(ctx, n)
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
			return Sleep(ctx, time.Until(due))
		}
		l.mu.Unlock()
		progressed, err := l.claim(ctx, want)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			l.failed(err)
		case !progressed:
			// Every position up to the horizon is taken: let time pass.
			if err := Sleep(ctx, l.o.Horizon/4); err != nil {
				return err
			}
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
	if _, err := l.claim(context.Background(), want); err != nil {
		l.failed(err)
	}
}

// failed counts a claim that failed; the second failure in a row (a store
// down, not one slow answer) switches to the local share for a while.
func (l *sharedLimiter) failed(err error) {
	l.mu.Lock()
	l.failures++
	down := l.failures >= 2
	if down {
		l.failures = 0
		l.down = time.Now().Add(l.o.Retry)
	}
	l.mu.Unlock()
	if down {
		l.owner.fellBack(err)
	}
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
	l.claimMu.Lock()
	defer l.claimMu.Unlock()
	l.mu.Lock()
	l.dropLate(time.Now())
	if len(l.held) >= want {
		l.mu.Unlock()
		return true, nil // another waiter's claim brought them
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
	l.mu.Lock()
	l.lead = (3*l.lead + took) / 4
	if err == nil {
		l.failures = 0
	}
	l.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("shared Graph budget: %w", err)
	}
	l.mu.Lock()
	for i := range int64(got) {
		l.held = append(l.held, first+i)
	}
	l.mu.Unlock()
	return got > 0, nil
}
