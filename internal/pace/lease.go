package pace

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// sharedLimiter paces a process's calls of one budget at the share its
// lease holds.
//
// Why the shares never add up to more than the budget: a process writes
// a lease before it uses its share and reads every lease after; it uses
// at most the share it wrote and the capacity less what the others' leases
// held in that read. Of two processes that raise their shares at once,
// the later reader sees the other's new share, so the two fit; a share
// is lowered in the process before the lower lease is written, so a
// lease never says less than its process uses. A lease lasts Term from
// the moment before its write on the process's monotonic clock, which
// ends before the store's stamp plus Term: a process that cannot renew
// (frozen, cut off) stops using it before any other process sees it
// expire. Every time a lease is judged by is the store's.
//
// Cut off from the store, a process keeps its share until its lease ends,
// then uses at most that share, and Term after the first failure (when
// every lease granted before the outage has expired) the outage share:
// the rate over the processes the store last showed, which the others
// keep reserved for a lease that expired lately.
type sharedLimiter struct {
	o     *SharedOptions
	key   string
	rate  float64 // the budget's whole rate as configured
	burst float64
	owner *Pacer
	// now and sleep are the clock (tests replace them to freeze the
	// process).
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration, changed <-chan struct{}) error
	// turn admits one waiter at a time to the bucket (FIFO, and a
	// waiter gives up with its context).
	turn chan struct{}
	// wake asks the renewer for a renewal now.
	wake chan struct{}

	mu       sync.Mutex
	tokens   float64
	filled   time.Time
	fillRate float64   // the rate at filled
	share    float64   // what the last lease confirmed
	leaseEnd time.Time // the share holds until then, on this clock
	seen     int       // processes the store last showed (0: never read)
	// probing is set while the first renewal after a start is under way
	// (during an outage the outage share waits for it: the store may be
	// back).
	probing bool
	// changed is closed (and replaced) when the share changes.
	changed chan struct{}
	running bool // the renewer runs
	waiting int
	// used counts the calls since the last renewal, waited whether a
	// caller had to wait for the share since then.
	used      float64
	lastUse   time.Time
	waited    bool
	renewedAt time.Time
	last      Leases // the last read (Now is zero before the first)
}

func newSharedLimiter(o *SharedOptions, key string, perSecond float64, burst int, owner *Pacer) *sharedLimiter {
	return &sharedLimiter{
		o: o, key: key, rate: max(perSecond, 0.001), burst: float64(max(burst, 1)), owner: owner,
		now: time.Now, sleep: sleepOrChange,
		turn: make(chan struct{}, 1), wake: make(chan struct{}, 1), changed: make(chan struct{}),
	}
}

// sleepOrChange waits d, or until changed is closed or ctx ends. It does
// not fail early for a deadline before d: the share may grow meanwhile.
func sleepOrChange(ctx context.Context, d time.Duration, changed <-chan struct{}) error {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-changed:
	case <-t.C:
	}
	return nil
}

// before reports whether now is before end on both the monotonic and
// the wall clock: a suspended VM stops the first, not the second.
func before(now, end time.Time) bool {
	return now.Before(end) && now.Round(0).Before(end.Round(0))
}

// rateAt is the rate this process may use at now (l.mu held), and when
// that changes next (zero: not by time alone).
func (l *sharedLimiter) rateAt(now time.Time) (float64, time.Time) {
	if l.share > 0 && before(now, l.leaseEnd) {
		return l.share, l.leaseEnd
	}
	down := l.o.health.since()
	if down.IsZero() || l.probing {
		return 0, time.Time{}
	}
	n := l.seen
	if n == 0 {
		n = l.o.Processes
	}
	outage := l.rate / float64(n)
	if full := down.Add(l.o.Term); before(now, full) {
		// Leases granted before the outage may still be used: keep
		// within this one's.
		return min(outage, l.share), full
	}
	return outage, time.Time{}
}

// signal tells waiters the share changed (l.mu held).
func (l *sharedLimiter) signal() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// poke asks the renewer for a renewal now, starting it if it is not
// running (l.mu held).
func (l *sharedLimiter) poke() {
	if !l.running {
		l.running, l.probing = true, true
		go l.renewer()
		return
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// WaitN waits until n calls fit this process's share (a token bucket at
// the share, burst as configured). Tokens are taken when a call goes
// out, never reserved ahead, so a share lowered applies at once and a
// process that was frozen sends at most a burst when it resumes.
func (l *sharedLimiter) WaitN(ctx context.Context, n int) error {
	l.mu.Lock()
	l.waiting++
	if !l.running {
		l.poke()
	}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.waiting--
		l.mu.Unlock()
	}()
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.turn }()
	need := min(float64(n), l.burst)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := l.now()
		l.mu.Lock()
		r, next := l.rateAt(now)
		if now.After(l.filled) {
			// The bucket fills at the lower of the rates at either end of
			// the interval (waiters wake at every change): a share that
			// starts never brings a burst saved while there was none.
			l.tokens = min(l.burst, l.tokens+min(r, l.fillRate)*now.Sub(l.filled).Seconds())
		}
		l.filled, l.fillRate = now, r
		if r > 0 && l.tokens >= need {
			l.tokens -= need
			l.used += need
			l.lastUse = now
			l.mu.Unlock()
			return nil
		}
		l.waited = true
		wait := l.o.Term // no share: the renewer, running while anyone waits, brings one
		if r > 0 {
			wait = time.Duration((need - l.tokens) / r * float64(time.Second))
		}
		if !next.IsZero() {
			wait = min(wait, next.Sub(now))
		}
		// Never a wait too short for the clock to move: the bucket would
		// not fill, and the loop would spin.
		wait = max(wait, time.Millisecond)
		changed := l.changed
		l.mu.Unlock()
		if err := l.sleep(ctx, wait, changed); err != nil {
			return err
		}
	}
}

// renewer renews the lease while the process uses the budget, and gives
// it up when the process stops.
func (l *sharedLimiter) renewer() {
	for {
		now := l.now()
		l.mu.Lock()
		mine := l.propose(now)
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), l.o.CallTimeout)
		got, err := l.o.Store.Renew(ctx, l.key, mine)
		cancel()
		next := l.took(now, mine, got, err)
		if !l.await(next) {
			return
		}
	}
}

// release gives the lease up (l.mu held; it is released).
func (l *sharedLimiter) release() {
	release := l.share > 0 && l.o.health.since().IsZero()
	l.share, l.running = 0, false
	l.signal()
	mine := l.lease(0, 0)
	mine.Idle = true
	l.mu.Unlock()
	if release {
		ctx, cancel := context.WithTimeout(context.Background(), l.o.CallTimeout)
		_ = l.o.Store.Release(ctx, l.key, mine) // an expired lease holds nothing either
		cancel()
	}
}

// took takes a renewal's outcome and says when to renew next.
func (l *sharedLimiter) took(sent time.Time, mine Lease, got Leases, err error) time.Duration {
	l.mu.Lock()
	l.probing = false
	next := l.o.Renew
	var pause time.Duration
	var notes []string
	if err != nil {
		next = l.failed(l.now(), err)
	} else {
		before := l.share
		var pl plan
		pl, pause, notes = l.renewed(sent, mine, got)
		starved := l.share < 0.95*pl.target && l.waiting > 0
		switch {
		case l.share < before*0.9 || mine.Share > l.share*1.1:
			// The lease says more than this process now uses: others
			// take it only once it says less.
			next = l.o.Renew / 8
		case starved && pl.capacity-pl.others > l.share:
			next = l.o.Renew / 8 // more is free: take it soon
		case starved:
			next = l.o.Renew / 4 // others hold it: they give it up as they renew
		}
	}
	l.mu.Unlock()
	select {
	case <-l.wake: // a renewal asked for while this one was under way: done
	default:
	}
	if pause > 0 {
		l.owner.Pause(pause) // another process's 429: this one honours it too
	}
	for _, n := range notes {
		l.owner.note(n)
	}
	return next
}

// await waits next before the next renewal (at least Renew/8 when woken
// early), giving the lease up, and reporting false, once nobody waits and
// nobody has used it for Renew/2.
func (l *sharedLimiter) await(next time.Duration) bool {
	start := l.now()
	for {
		left := next - l.now().Sub(start)
		if left <= 0 {
			return true
		}
		step, slept := min(left, l.o.Renew/4), l.now()
		_ = l.sleep(context.Background(), step, l.wake)
		now := l.now()
		if now.Sub(slept) < step {
			next = min(next, l.o.Renew/8) // woken: a renewal soon
		}
		l.mu.Lock()
		if l.waiting == 0 && now.Sub(l.lastUse) >= l.o.Renew/2 {
			l.release()
			return false
		}
		l.mu.Unlock()
	}
}

// lease is this process's lease with share and demand (l.mu held).
func (l *sharedLimiter) lease(share, demand float64) Lease {
	return Lease{Process: l.o.Process, Rate: l.rate, Share: share, Demand: demand, Term: l.o.Term}
}

// propose is the lease to write next (l.mu held): the fair share the last
// read allowed, and of it what the others left free then or the share
// held, whichever is more; a lower share applies before it is written.
func (l *sharedLimiter) propose(now time.Time) Lease {
	demand := l.rate
	if since := now.Sub(l.renewedAt).Seconds(); !l.waited && l.waiting == 0 && since > 0 && !l.renewedAt.IsZero() {
		demand = min(l.rate, max(1.5*l.used/since, 1/l.o.Renew.Seconds()))
	}
	held := 0.0
	if before(now, l.leaseEnd) {
		held = l.share
	}
	// Before any read, what it would use: the read after the write
	// confirms what of it fits.
	share := demand
	if !l.last.Now.IsZero() {
		pl := allocate(l.o.Process, l.rate, demand, l.last)
		share = min(pl.target, max(held, pl.capacity-pl.others))
	}
	if share < l.share {
		l.share = share
		l.signal()
	}
	l.used, l.waited, l.renewedAt = 0, false, now
	return l.lease(share, demand)
}

// renewed takes a renewal's answer (l.mu held): the share is what was
// written, at most what the others leave; the lease runs from sent. It
// returns the plan the answer gives, a 429 pause to honour and notes for
// the runs.
func (l *sharedLimiter) renewed(sent time.Time, mine Lease, got Leases) (plan, time.Duration, []string) {
	pl := allocate(l.o.Process, l.rate, mine.Demand, got)
	l.last = got
	// What was written, at most what the others leave, and at most the
	// fair share now (others waiting for theirs take it once a lower
	// lease is written, soon after).
	l.share = max(0, min(mine.Share, pl.capacity-pl.others, max(pl.target, 0)))
	l.leaseEnd = sent.Add(l.o.Term)
	l.seen = pl.seen
	l.o.health.ok()
	l.signal()
	var notes []string
	if pl.mismatch {
		notes = append(notes, "the processes sharing this Graph budget are set to different rates (GRAPH_WRITE_RATE / GRAPH_READ_RATE): every one paces within the lowest; set the same everywhere")
	}
	var pause time.Duration
	if !got.PausedUntil.IsZero() && got.PausedUntil.After(got.Now) {
		pause = got.PausedUntil.Sub(got.Now)
	}
	return pl, pause, notes
}

// failed takes a failed renewal (l.mu held) and says when to try again.
func (l *sharedLimiter) failed(at time.Time, err error) time.Duration {
	err = fmt.Errorf("shared Graph budget: %w", err)
	l.o.health.failed(at)
	l.signal()
	if before(at, l.leaseEnd) {
		return min(l.o.Retry, time.Second) // the lease still holds: try again soon
	}
	l.owner.fellBack(err)
	return l.o.Retry
}

// throttled writes a 429 pause of d to the budget.
func (l *sharedLimiter) throttled(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), l.o.CallTimeout)
	defer cancel()
	if err := l.o.Store.Throttled(ctx, l.key, d); err != nil {
		l.owner.note("a 429 could not be shared with the deployment's other processes: " + err.Error())
		return
	}
	l.mu.Lock()
	if l.running {
		l.poke() // the halved rate applies to this process at once
	}
	l.mu.Unlock()
}
