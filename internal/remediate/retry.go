package remediate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/pace"
)

// callKind is what a Graph call does: a write may have taken effect even
// when its answer was an error, a read never has.
type callKind int

const (
	read callKind = iota
	write
)

// retryClass is what the policy makes of a failed call.
type retryClass int

const (
	final     retryClass = iota // the error stands
	throttled                   // 429: close the gate and retry
	transient                   // a server-side failure worth a retry
	reauth                      // 401 with a token: drop its credential, retry once
)

// RetryPolicy is the one retry policy of every Graph call, in the style of
// go-retryablehttp: CheckRetry says what is retryable, Backoff how long to
// wait. Zero fields take their defaults.
type RetryPolicy struct {
	// MaxThrottled bounds the 429 retries of one call, for runs without
	// a deadline. Default 100.
	MaxThrottled int
	// MaxTransient bounds the retries of transient failures of one call
	// (the trigger may already have taken effect). Default 2; negative is
	// none.
	MaxTransient int
	// BackoffBase and BackoffMax shape the waits after a 429 without
	// Retry-After and after transient failures. Defaults 1 s and 60 s.
	BackoffBase, BackoffMax time.Duration
	// MaxRetryAfter caps the Retry-After Graph sends (RETRY_AFTER_MAX): a
	// day-long value, or a date in year 9999, would stop every run of the
	// process while Graph is healthy. Default 5 min.
	MaxRetryAfter time.Duration
}

// DefaultMaxRetryAfter is RETRY_AFTER_MAX: the longest Retry-After
// honoured.
const DefaultMaxRetryAfter = 5 * time.Minute

func (p *RetryPolicy) defaults() {
	if p.MaxThrottled <= 0 {
		p.MaxThrottled = 100
	}
	switch {
	case p.MaxTransient < 0:
		p.MaxTransient = 0
	case p.MaxTransient == 0:
		p.MaxTransient = 2
	}
	if p.BackoffBase <= 0 {
		p.BackoffBase = time.Second
	}
	if p.BackoffMax <= 0 {
		p.BackoffMax = 60 * time.Second
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = DefaultMaxRetryAfter
	}
}

// CheckRetry classifies a failed call: 429 is throttled; a 401 to a call
// that sent a token is reauth (the secret may have rotated: once); a lost
// answer, 503 or 504 is transient for every call, other 5xx only for
// reads (a write that failed with 500 is not sent twice); the rest is
// final.
func (p RetryPolicy) CheckRetry(kind callKind, e *intune.Error) retryClass {
	switch {
	case e.Throttled():
		return throttled
	case e.Status == 401 && e.Credential != 0:
		return reauth
	case e.Unavailable(), kind == read && e.ServerSide():
		return transient
	}
	return final
}

// Backoff is the wait before retry n (from 1) after e: the Retry-After
// Graph sent (at most MaxRetryAfter), else capped exponential backoff with
// jitter.
func (p RetryPolicy) Backoff(e *intune.Error, n int) time.Duration {
	d, _ := p.wait(e, n)
	return d
}

// wait is Backoff, and whether Graph's Retry-After was over the cap.
func (p RetryPolicy) wait(e *intune.Error, n int) (time.Duration, bool) {
	if d, ok := pace.RetryAfter(e.RetryAfter, time.Now()); ok {
		if p.MaxRetryAfter > 0 && d > p.MaxRetryAfter {
			return p.MaxRetryAfter, true
		}
		return d, false
	}
	return pace.Backoff(n, p.BackoffBase, p.BackoffMax), false
}

// errNoTime is the error of a call that could not start (or retry) before
// the execution's time ran out. It wraps the previous attempt's error, if
// any.
var errNoTime = errors.New("no time left for the call")

// call runs fn under the pacer and the retry policy. It returns the
// attempts sent, when the last one was sent, and nil or the error that
// stands. A 429 pauses every caller of the pacer for the wait; a transient
// failure waits on its own.
func (x *execution) call(kind callKind, fn func(ctx context.Context) error) (attempts int, sent time.Time, err error) {
	return x.callN(kind, func() int { return 1 }, fn)
}

// callN is call for attempts that each cost cost() positions of the
// budget (a $batch read: one per item it still asks for).
func (x *execution) callN(kind callKind, cost func() int, fn func(ctx context.Context) error) (attempts int, sent time.Time, err error) {
	e := x.engine
	policy := e.cfg.Retry
	var last error
	throttledN, transientN, reauthN := 0, 0, 0
	for {
		var perr error
		if kind == write {
			_, perr = x.pacer.Write(x.runCtx)
		} else {
			_, perr = x.pacer.Read(x.runCtx, cost())
		}
		if perr != nil {
			if last != nil {
				return attempts, sent, fmt.Errorf("%w: %w", errNoTime, last)
			}
			return attempts, sent, errNoTime
		}
		attempts++
		sent = time.Now().UTC()
		last = fn(x.callCtx)
		if last == nil {
			return attempts, sent, nil
		}
		if errors.Is(last, errTooManyListed) {
			return attempts, sent, last // a bound of ours, not Graph's: never retried
		}
		ge := asGraphError(last)
		switch policy.CheckRetry(kind, ge) {
		case throttled:
			if throttledN++; throttledN > policy.MaxThrottled {
				return attempts, sent, last
			}
			x.onThrottled(ge, throttledN)
		case transient:
			if transientN++; transientN > policy.MaxTransient {
				return attempts, sent, last
			}
			if pace.Sleep(x.runCtx, policy.Backoff(ge, transientN)) != nil {
				return attempts, sent, last
			}
		case reauth:
			if reauthN++; reauthN > 1 || e.cfg.Credentials == nil {
				return attempts, sent, last // a second 401 stands
			}
			e.cfg.Credentials.Invalidate(x.callCtx, ge.Credential)
		default:
			return attempts, sent, last
		}
	}
}

// onThrottled closes the pacer's gate for every caller: for Retry-After,
// else for a capped exponential backoff.
func (x *execution) onThrottled(ge *intune.Error, n int) {
	wait, capped := x.engine.cfg.Retry.wait(ge, n)
	x.pacer.Throttled(wait)
	x.throttle.add(wait, capped)
}

// read is one paced, retried read.
func (x *execution) read(fn func(ctx context.Context) error) error {
	_, _, err := x.call(read, fn)
	return err
}

// eachPage is the one iterator over Graph's @odata.nextLink paging: fetch
// reads the page at next ("" for the first) and returns its items and the
// next link; each gets every page until it returns false. Each page is a
// paced, retried read; the error that stopped the paging is returned.
func eachPage[T any](x *execution, fetch func(ctx context.Context, next string) ([]T, string, error), each func([]T) bool) error {
	next := ""
	for {
		var items []T
		var link string
		err := x.read(func(ctx context.Context) error {
			var err error
			items, link, err = fetch(ctx, next)
			return err
		})
		if err != nil {
			return err
		}
		if !each(items) || link == "" {
			return nil
		}
		next = link
	}
}
