package pace

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Shared is a budget kept outside the process and shared by every process
// of a deployment (internal/azstore keeps it in Azure Storage). Each
// process holds a lease on a share of the budget's rate, in a record of
// its own, and paces its calls at that share; the shares of the leases
// that have not expired never add up to more than the rate (see
// sharedLimiter). Lease times are the store's: it stamps each lease when
// it writes it and says its own time when it reads them, so no process's
// clock decides anything another process relies on.
type Shared interface {
	// Renew writes this process's lease of budget key (the store stamps
	// it with its own clock), then reads every lease of the budget and
	// its 429 state: two storage operations, and no race with other
	// processes (each writes only its own record).
	Renew(ctx context.Context, key string, mine Lease) (Leases, error)
	// Release writes mine as idle: the process uses nothing and holds
	// nothing (one storage operation).
	Release(ctx context.Context, key string, mine Lease) error
	// Throttled records a 429 of budget key: every process pauses until d
	// after the store's now, and the budget's rate halves, to come back
	// slowly (RecoveryPerSecond).
	Throttled(ctx context.Context, key string, d time.Duration) error
}

// Lease is one process's lease of a budget.
type Lease struct {
	// Process names the process (the store's key for its record).
	Process string `json:"-"`
	// Rate is the budget's whole rate (calls a second) as this process is
	// configured: the budget's capacity is the lowest any live lease says.
	Rate float64 `json:"r"`
	// Share is what the process may use (calls a second) until Term after
	// Written; Demand what it would use.
	Share  float64 `json:"s"`
	Demand float64 `json:"d"`
	// Term is how long the lease lasts after Written.
	Term time.Duration `json:"t"`
	// Idle is a lease given up: the process uses nothing.
	Idle bool `json:"i,omitempty"`
	// Written is when the store wrote the lease, on the store's clock
	// (the store sets it).
	Written time.Time `json:"-"`
}

// Leases is what the store knows of a budget.
type Leases struct {
	// Now is the store's clock when it read them (a Date header: to the
	// second, never ahead of the store); a store always says it.
	Now time.Time
	// All is every lease of the budget, this process's included.
	All []Lease
	// PausedUntil is the budget's 429 pause on the store's clock (zero
	// for none); Factor the share of the rate the budget allows while it
	// recovers from a 429 (1 when recovered).
	PausedUntil time.Time
	Factor      float64
}

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

// Defaults of SharedOptions.
const (
	// DefaultLeaseTerm is how long a lease lasts unless renewed.
	DefaultLeaseTerm = 6 * time.Second
	// DefaultRenewEvery is how often a busy process renews its lease.
	DefaultRenewEvery = 2 * time.Second
	// DefaultStoreRetry is how often a process cut off from the store
	// tries it again.
	DefaultStoreRetry = 5 * time.Second
	// DefaultStoreCallTimeout bounds one call to the store.
	DefaultStoreCallTimeout = 2 * time.Second
	// recentWindow is how long a process counts as using a budget after
	// its lease was last written: the outage share is the rate over the
	// processes seen within it, and a lease that expired within it (a
	// process cut off from the store, frozen, or gone) keeps that share
	// reserved.
	recentWindow = time.Minute
)

// SharedOptions configures WithShared.
type SharedOptions struct {
	// Store keeps the budget.
	Store Shared
	// Scope names the app registration whose budget this is (Intune's
	// limits are per app and tenant): budget keys are scope|tenant|kind.
	Scope string
	// Term is how long a lease lasts unless renewed (DefaultLeaseTerm);
	// Renew how often a busy process renews it (DefaultRenewEvery): two
	// storage operations a renewal, whatever the number of calls.
	Term, Renew time.Duration
	// Processes is how many processes may share the budget at most: a
	// process that never reached the store and cannot, paces itself at
	// 1/Processes of the rate.
	Processes int
	// Retry is how often a process cut off from the store tries it again
	// (DefaultStoreRetry).
	Retry time.Duration
	// CallTimeout bounds one call to the store (DefaultStoreCallTimeout).
	CallTimeout time.Duration
	// DefaultTenant is the tenant id of requests that name none: its
	// budget is the same whether a request names it or not.
	DefaultTenant string
	// Process names this process to the store (default: random).
	Process string

	health *storeHealth
}

// Budget kinds.
const (
	kindWrite = "w"
	kindRead  = "r"
)

// WithShared makes p, and every tenant budget For returns, take its
// share of each budget from the shared store instead of pacing alone.
// Call it before p is used.
func (p *Pacer) WithShared(o SharedOptions) *Pacer {
	o.Term = cmp.Or(max(o.Term, 0), DefaultLeaseTerm)
	o.Renew = min(cmp.Or(max(o.Renew, 0), DefaultRenewEvery), o.Term/2)
	o.Retry = cmp.Or(max(o.Retry, 0), DefaultStoreRetry)
	o.CallTimeout = cmp.Or(max(o.CallTimeout, 0), DefaultStoreCallTimeout)
	o.Processes = max(o.Processes, 1)
	if o.Process == "" {
		o.Process = fmt.Sprintf("%016x", rand.Uint64())
	}
	o.DefaultTenant = strings.ToLower(o.DefaultTenant)
	o.health = &storeHealth{}
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

// plan is a budget's allocation as one process sees it in the leases the
// store read.
type plan struct {
	// capacity is the budget's rate now: the lowest rate a live lease
	// says, times the 429 factor.
	capacity float64
	// others is what the other processes hold: the shares of their live
	// leases, and the outage share for a lease that expired lately (its
	// process may be cut off from the store and pacing at that share).
	others float64
	// target is this process's max-min fair share of what is not
	// reserved, given every live lease's demand and its own.
	target float64
	// seen is how many processes used the budget lately, this one
	// included; mismatch is set when they are set to different rates.
	seen     int
	mismatch bool
}

// allocate computes the plan of process self (configured at rate, which
// would use demand) from ls.
func allocate(self string, rate, demand float64, ls Leases) plan {
	pl := plan{capacity: rate, seen: 1}
	type other struct {
		Lease
		live bool
	}
	var rest []other
	for _, l := range ls.All {
		if l.Process == self {
			continue
		}
		age := ls.Now.Sub(l.Written)
		if age > recentWindow {
			continue
		}
		pl.seen++
		live := !l.Idle && age <= l.Term
		if !l.Idle {
			if l.Rate > 0 && l.Rate != rate {
				pl.mismatch = true
			}
			if l.Rate > 0 {
				pl.capacity = min(pl.capacity, l.Rate)
			}
		}
		rest = append(rest, other{l, live})
	}
	if ls.Factor > 0 {
		pl.capacity *= min(ls.Factor, 1)
	}
	outage := pl.capacity / float64(pl.seen)
	free := pl.capacity
	demands := []float64{demand}
	for _, o := range rest {
		switch {
		case o.live:
			pl.others += o.Share
			demands = append(demands, max(o.Demand, o.Share))
		case !o.Idle:
			pl.others += outage
			free -= outage
		}
	}
	pl.target = fairShare(max(free, 0), demands)
	return pl
}

// fairShare is the max-min fair share of capacity of the first of
// demands: every demand below an equal split is met, and the rest split
// what remains equally.
func fairShare(capacity float64, demands []float64) float64 {
	left, n := capacity, len(demands)
	sorted := append([]float64(nil), demands...)
	for n > 0 {
		each := left / float64(n)
		lowest, at := -1.0, -1
		for i, d := range sorted {
			if d >= 0 && (at < 0 || d < lowest) {
				lowest, at = d, i
			}
		}
		if lowest >= each {
			return min(demands[0], each)
		}
		if at == 0 {
			return lowest
		}
		left -= lowest
		sorted[at] = -1
		n--
	}
	return 0
}

// storeHealth is what a process knows of the store's reachability, shared
// by all its budgets: an outage is the store's, so a budget first used
// during one need not wait a lease's term of its own.
type storeHealth struct {
	mu        sync.Mutex
	downSince time.Time // when a call first failed in the current outage (zero: none)
}

func (h *storeHealth) since() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.downSince
}

func (h *storeHealth) failed(at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.downSince.IsZero() {
		h.downSince = at
	}
}

func (h *storeHealth) ok() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.downSince = time.Time{}
}
