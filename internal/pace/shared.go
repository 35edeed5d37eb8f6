package pace

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
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
	// Claim takes positions of a budget (ClaimRequest) and says what the
	// store knows of it (Claimed).
	Claim(ctx context.Context, req ClaimRequest) (Claimed, error)
	// Throttled records a 429 of the budget key: every process pauses until
	// until (on the store's clock), and the budget's rate halves, to come
	// back slowly (RecoveryPerSecond).
	Throttled(ctx context.Context, key string, until time.Time) error
}

// ClaimRequest asks for want consecutive positions of the budget Key, none
// below From and none beyond From+Horizon.
type ClaimRequest struct {
	Key string
	// Spacing is the time between positions (1/rate). The budget keeps
	// it: a process pacing at another rate is refused (ErrRateMismatch),
	// since the same position would fall at different times for it.
	Spacing       time.Duration
	From, Horizon int64
	Want          int
	// Process names the claiming process, so the store can tell how many
	// processes use the budget lately.
	Process string
}

// Claimed is what a claim took and what the store knows of the budget.
type Claimed struct {
	// First is the first position taken, Got how many (0 when every
	// position up to the horizon is taken).
	First int64
	Got   int
	// StoreTime is the store's clock when the claim was written (zero if
	// the store does not say): positions fall due on it.
	StoreTime time.Time
	// Repaired is set when the budget's next position was implausibly far
	// ahead of the store's clock (a process whose clock ran ahead pushed
	// it) and was reset to the store's now.
	Repaired bool
	// Processes is how many processes claimed from the budget lately,
	// this one included (0 if the store does not say).
	Processes int
	// PausedUntil is the budget's 429 pause on the store's clock (zero
	// for none); Factor the share of the rate the budget allows while it
	// recovers from a 429 (1 when recovered).
	PausedUntil time.Time
	Factor      float64
}

// ErrRateMismatch is a claim by a process whose rate differs from the one
// the budget was set up with.
var ErrRateMismatch = errors.New("shared Graph budget: the processes of this deployment pace at different rates (GRAPH_WRITE_RATE / GRAPH_READ_RATE); set the same everywhere")

// RecoveryPerSecond is how fast a budget's rate comes back after a 429
// halved it: this share of the full rate a second.
const RecoveryPerSecond = 0.005

// Factor is a budget's share of its rate at now, after a 429 at
// throttledAt left it at base: base, growing by RecoveryPerSecond a
// second, up to 1.
func Factor(base float64, throttledAt, now time.Time) float64 {
	if throttledAt.IsZero() || base <= 0 {
		return 1
	}
	return min(1, base+now.Sub(throttledAt).Seconds()*RecoveryPerSecond)
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
	// Process names this process to the store (default: random), which
	// counts the processes using a budget for the outage share.
	Process string
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
	if o.Process == "" {
		o.Process = fmt.Sprintf("%016x", rand.Uint64())
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

	// offset is the store's clock minus this process's (offLo..offHi is
	// what the claims so far allow; clocked once one said): positions
	// fall due on the store's clock, whatever this machine's says.
	offset, offLo, offHi time.Duration
	clocked              bool
	// factor is the share of the rate the budget allows after a 429;
	// processes how many processes used it lately (0: unknown).
	factor    float64
	processes int
	// usage is how many positions this process uses a second lately
	// (usedNow counts the current second's): claims ask for about two
	// seconds of it, so that an idle process claims little and a busy one
	// enough to keep storage calls per call low.
	usage   float64
	usedNow int
	usedAt  time.Time
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
		// A late position is used at once: at most this late, so that a
		// window of Intune's holds at most rate×(window+late) calls.
		late:     max(spacing, 20*time.Millisecond),
		local:    rate.NewLimiter(rate.Limit(perSecond/float64(o.Processes)), burst),
		owner:    owner,
		now:      time.Now,
		sleep:    Sleep,
		claiming: make(chan struct{}, 1),
		factor:   1,
	}
}

// at is when position pos falls due, on this process's clock (l.mu held).
func (l *sharedLimiter) at(pos int64) time.Time {
	return time.Unix(0, pos*int64(l.spacing)).Add(-l.offset)
}

// observeClock narrows the clock offset with a claim's store time: the
// store read stored (to the second: Date headers have no fractions)
// between sent and recv on this clock (l.mu held).
func (l *sharedLimiter) observeClock(stored, sent, recv time.Time) {
	lo, hi := stored.Sub(recv), stored.Add(time.Second).Sub(sent)
	if l.clocked && lo <= l.offHi && hi >= l.offLo {
		lo, hi = max(lo, l.offLo), min(hi, l.offHi)
	}
	// The smallest correction the store's answers allow: none while this
	// clock is within them (a Date header says the second only, and every
	// process of a deployment must map positions alike), else the bound
	// nearest to this clock.
	l.offLo, l.offHi, l.clocked = lo, hi, true
	switch {
	case lo > 0:
		l.offset = lo
	case hi < 0:
		l.offset = hi
	default:
		l.offset = 0
	}
}

// used counts n positions handed out (l.mu held).
func (l *sharedLimiter) used(now time.Time, n int) {
	if d := now.Sub(l.usedAt); d >= time.Second {
		secs := max(1, d.Seconds())
		l.usage = l.usage/2 + float64(l.usedNow)/secs/2
		l.usedNow, l.usedAt = 0, now
	}
	l.usedNow += n
}

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
		l.dropLate(now)
		if down := now.Before(l.down); down && len(l.held) < n {
			// Positions already claimed are this process's still; past
			// them, the local share.
			l.mu.Unlock()
			err := localWaitWhile(ctx, l.local, n, l.late, l.now, l.sleep, func() bool {
				l.mu.Lock()
				defer l.mu.Unlock()
				return l.now().Before(l.down)
			})
			if errors.Is(err, errShareEnded) {
				continue
			}
			return err
		}
		want := l.want(n)
		if len(l.held) >= n {
			due := l.at(l.held[n-1])
			l.held = l.held[n:]
			l.used(now, n)
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
	return localWaitWhile(ctx, lim, n, late, now, sleep, nil)
}

// errShareEnded is the end of a local-share wait because the shared budget
// answers again: the caller takes a shared position instead.
var errShareEnded = errors.New("pace: the shared budget answers again")

// localWaitWhile is localWait, giving up the slot (errShareEnded) when
// still() turns false during the wait: local slots are cancelled when the
// shared budget returns, so they never overlap its positions.
func localWaitWhile(ctx context.Context, lim *rate.Limiter, n int, late time.Duration, now func() time.Time, sleep func(context.Context, time.Duration) error, still func() bool) error {
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
		if still != nil && !still() {
			return errShareEnded
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
	return min(max(n, l.waiting, int(math.Ceil(2*l.usage)), cover), int(l.horizon))
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
	began := l.now()
	from := (began.Add(l.offset+l.lead).UnixNano() + int64(l.spacing) - 1) / int64(l.spacing)
	if len(l.held) > 0 {
		from = max(from, l.held[len(l.held)-1]+1)
	}
	want -= len(l.held)
	if l.factor < 1 {
		// A budget recovering from a 429 uses a share of its positions:
		// claim enough to keep want of them.
		want = int(math.Ceil(float64(want) / l.factor))
	}
	want = min(want, int(l.horizon))
	l.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, l.o.CallTimeout)
	c, err := l.o.Store.Claim(cctx, ClaimRequest{Key: l.key, Spacing: l.spacing, From: from, Want: want, Horizon: l.horizon, Process: l.o.Process})
	cancel()
	recv := l.now()
	took := min(recv.Sub(began), l.o.Horizon/4)
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
			// The local share starts empty: no burst saved up while the
			// shared budget served goes out on top of it.
			l.local.AllowN(l.now(), l.local.Burst())
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
	if !c.StoreTime.IsZero() {
		l.observeClock(c.StoreTime, began, recv)
	}
	if c.Processes > 0 {
		l.processes = c.Processes
		// The outage share: the rate over the processes last seen.
		l.local.SetLimit(rate.Limit(1 / l.spacing.Seconds() / float64(c.Processes)))
	}
	l.factor = 1
	if c.Factor > 0 {
		l.factor = c.Factor
	}
	var pause time.Duration
	if !c.PausedUntil.IsZero() {
		pause = c.PausedUntil.Add(-l.offset).Sub(recv)
	}
	for i := range int64(c.Got) {
		pos := c.First + i
		// While the budget recovers from a 429, every process skips the
		// same positions: the rate is the factor's share of it.
		if l.factor >= 1 || math.Floor(float64(pos)*l.factor) > math.Floor(float64(pos-1)*l.factor) {
			l.held = append(l.held, pos)
		}
	}
	l.mu.Unlock()
	if pause > 0 {
		l.owner.Pause(pause) // another process's 429: this one honours it too
	}
	if c.Repaired {
		l.owner.note("the shared Graph budget's next position was far ahead of storage's clock (a process's clock runs ahead) and was reset")
	}
	return c.Got > 0, nil
}

// throttled writes a 429 pause of d to the budget (on the store's clock).
func (l *sharedLimiter) throttled(d time.Duration) {
	l.mu.Lock()
	until := l.now().Add(l.offset + d)
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), l.o.CallTimeout)
	defer cancel()
	if err := l.o.Store.Throttled(ctx, l.key, until); err != nil {
		l.owner.note("a 429 could not be shared with the deployment's other processes: " + err.Error())
	}
}
