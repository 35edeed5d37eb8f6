// Package remediate is remediator's domain: the request and its
// validation, the engine that triggers on-demand remediation on every
// device of a run within Intune's limits and the run's deadline, and the
// summary that accounts for every device exactly once. It knows nothing of
// HTTP, Azure, AWS or the Graph SDK: adapters translate their payloads to a
// Request and the Summary back, and refusals are error codes that the HTTP
// layer maps to statuses.
package remediate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/pace"
)

// Graph is what the engine needs from Microsoft Graph; *graph.Client
// implements it. Each method makes one attempt; the engine retries.
type Graph interface {
	Trigger(ctx context.Context, coll intune.Collection, deviceID, scriptID string) (intune.Response, error)
	Devices(ctx context.Context, ids []string) ([]intune.Lookup, error)
	ListDevices(ctx context.Context, filter string, top int, next string) (intune.Page, error)
	GroupDevices(ctx context.Context, groupID, next string) (intune.GroupPage, error)
	Script(ctx context.Context, id string) (intune.Script, error)
	RunStates(ctx context.Context, scriptID, next string) (intune.RunStatePage, error)
}

// Credentials resolve the Graph credential of a tenant: the context they
// return carries it to the Graph client; *credential.Source implements it.
// Their errors are *fault.Error.
type Credentials interface {
	Prepare(ctx context.Context, tenant string) (context.Context, error)
	// Invalidate drops the credential of generation gen (a Graph call sent
	// its token and got 401: the secret may have rotated), so that the
	// next call resolves it again.
	Invalidate(ctx context.Context, gen uint64)
}

// Config tunes the engine.
type Config struct {
	// Credentials, when set, are resolved for each tenant before its Graph
	// calls; nil sends the Graph client's own (simulators: none).
	Credentials Credentials
	// Concurrency bounds the calls in flight. Default 8.
	Concurrency int
	// Headroom is kept between the last call and the deadline to write the
	// summary: the smaller of Headroom and a tenth of the run's budget.
	// Default 2 s.
	Headroom time.Duration
	// Retry is the retry policy of every Graph call.
	Retry RetryPolicy
	// MaxDevices caps the devices a run triggers once selectors are
	// resolved (MAX_DEVICES_PER_RUN); 0 is no cap. A real run stops
	// resolving as soon as its selectors pass it.
	MaxDevices int
	// MaxListed bounds the devices one run reads from the tenant's device
	// list, over every page of every filter, name look-up and validation
	// (MAX_LISTED_DEVICES): a nextLink chain that never ends, or a tenant
	// larger than planned for, cannot take the process's memory. Default
	// DefaultMaxListed.
	MaxListed int
	// MaxFleetPercent refuses, without confirm_device_count, runs that
	// trigger more than this share of the tenant's Windows devices; 0 or
	// 100 is off.
	MaxFleetPercent float64
	// AllowedScripts, when not empty, is the only scripts runs may use
	// (lower-case ids); ScriptPins pins scripts to their
	// lastModifiedDateTime so a script edited after approval is refused.
	AllowedScripts map[string]bool
	ScriptPins     map[string]time.Time
	// Cooldown remembers triggers; a device+script triggered within
	// CooldownPeriod is skipped. Nil or 0 turns it off.
	Cooldown       Cooldown
	CooldownPeriod time.Duration
	// StoreTimeout bounds each call to the cooldown store: a slow or
	// unreachable store costs a run at most this, and a warning. Default
	// 2 s.
	StoreTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Headroom <= 0 {
		c.Headroom = 2 * time.Second
	}
	if c.MaxListed <= 0 {
		c.MaxListed = DefaultMaxListed
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = DefaultStoreTimeout
	}
	c.Retry.defaults()
}

// DefaultConcurrency is MAX_CONCURRENCY: Graph calls in flight.
const DefaultConcurrency = 8

// DefaultStoreTimeout is STORAGE_CALL_TIMEOUT: one storage call's bound.
const DefaultStoreTimeout = 2 * time.Second

// DefaultMaxListed is MaxListed's default: the 190,000-device tenant of
// the benchmarks, with room.
const DefaultMaxListed = 250_000

// Engine prepares and carries out remediation plans. It is safe for
// concurrent use; executions share its Pacer, so together they stay under
// the write pace.
type Engine struct {
	graph Graph
	pacer *pace.Pacer
	cfg   Config
	log   *slog.Logger
}

// New returns an Engine.
func New(g Graph, p *pace.Pacer, cfg Config, log *slog.Logger) *Engine {
	cfg.defaults()
	return &Engine{graph: g, pacer: p, cfg: cfg, log: log}
}

// Rejected is the summary of a run refused before its first trigger (a
// *fault.Error whose Summary accounts for every device: not_attempted,
// run_rejected, or skipped), or nil for any other error.
func Rejected(err error) *Summary {
	var fe *fault.Error
	if errors.As(err, &fe) {
		s, _ := fe.Summary.(*Summary)
		return s
	}
	return nil
}

// rejection is the error of a run refused with summary s.
func rejection(s *Summary) *fault.Error {
	e := &fault.Error{Code: s.Error.Code, Message: s.Error.Message, Details: s.Error.Details, Total: len(s.Error.Details), Summary: s}
	if e.Code == fault.GraphUnavailable || e.Code == fault.FleetSizeUnknown {
		e.RetryAfter = 30 * time.Second // Graph may answer again by then
	}
	return e
}

// Complete prepares plan and triggers it at once: the final summary, or
// the rejected run's. Per-device failures are data in the summary, never
// errors.
func (e *Engine) Complete(ctx context.Context, plan Plan) *Summary {
	p, err := e.Prepare(ctx, plan)
	if s := Rejected(err); s != nil {
		return s
	}
	return p.Execute()
}

// Prepared is a run resolved, validated and checked against the
// deployment's policy, with nothing triggered yet: the devices to trigger
// are Pending in its summary. Execute triggers them here; Queue hands them
// to workers (asynchronous runs).
type Prepared struct {
	x       *execution
	s       *Summary
	started time.Time
	done    bool
}

// Credential is ctx carrying tenant's Graph credential, for the engine's
// calls made for that tenant (a worker's, a follow-up's). A failure is a
// *fault.Error: unknown_tenant, token_unavailable, ..., or
// credential_unavailable for a failure of the source's own.
func (e *Engine) Credential(ctx context.Context, tenant string) (context.Context, error) {
	if e.cfg.Credentials == nil {
		return ctx, nil
	}
	c, err := e.cfg.Credentials.Prepare(ctx, tenant)
	if err != nil {
		var fe *fault.Error
		if errors.As(err, &fe) {
			return ctx, fe
		}
		return ctx, &fault.Error{Code: fault.CredentialUnavailable, Message: err.Error(), RetryAfter: 60 * time.Second}
	}
	return c, nil
}

// Prepare does everything a run does before its first trigger: allowlist,
// target resolution, script checks, device validation, cooldown and caps.
// A refused run is a *fault.Error whose Summary is the run's (Rejected). The run's time (ctx's deadline and
// plan.Invoke) starts now.
func (e *Engine) Prepare(ctx context.Context, plan Plan) (*Prepared, error) {
	ctx, err := e.Credential(ctx, plan.TenantID)
	if err != nil {
		return nil, err // before anything is read: no run to account for
	}
	started := time.Now()
	s := &Summary{
		RunID:                 newRunID(),
		DryRun:                plan.DryRun,
		Warnings:              append([]string(nil), plan.Warnings...),
		StartedAt:             started.UTC(),
		IgnorePartialFailures: plan.IgnorePartialFailures,
	}
	x := e.newExecution(ctx, started, plan.Invoke, plan.TenantID)
	x.plan = plan
	reject := func(code fault.Code, msg string, details []fault.FieldError) (*Prepared, error) {
		x.cancel()
		return nil, rejection(e.reject(s, x, started, code, msg, details))
	}

	if d := e.allowlist(plan); d != nil {
		return reject(fault.ScriptNotAllowed, "a script is not on this deployment's allowlist (ALLOWED_SCRIPT_POLICY_IDS); nothing was triggered", d)
	}
	var misses []DeviceResult
	if len(plan.Targets) > 0 {
		items, m, problems := x.resolve()
		switch {
		case x.tooMany && x.callerCap():
			limit, name := x.deviceCap()
			return reject(fault.CallerNotAllowed, fmt.Sprintf("the targets select more than %s (%d devices; resolving stopped at %d); nothing was triggered", name, limit, x.reached), problems)
		case x.tooMany:
			limit, name := x.deviceCap()
			return reject(fault.TooManyDevices, fmt.Sprintf("the targets select more than %s (%d) devices; nothing was triggered", name, limit), problems)
		case problems != nil:
			return reject(fault.TargetResolutionFailed, "the targets could not be resolved; nothing was triggered", problems)
		}
		plan.Items, misses = mergeItems(plan.Items, items, &s.Warnings), m
		x.plan = plan
	}
	s.Devices = make([]DeviceResult, len(plan.Items), len(plan.Items)+len(misses))
	for i, it := range plan.Items {
		s.Devices[i] = DeviceResult{DeviceID: it.DeviceID, ScriptPolicyID: it.ScriptPolicyID, Collection: string(it.Collection), Outcome: Pending}
	}
	s.Devices = append(s.Devices, misses...)
	if code, msg, d := x.checkScripts(s); d != nil {
		return reject(code, msg, d)
	}
	if plan.ValidateDevices || len(plan.Targets) > 0 {
		if problems := x.validate(s); problems != nil {
			return reject(fault.DeviceValidationFailed, problems.Error.Message, problems.Error.Details)
		}
	}
	x.applyCooldown(s)
	s.ResolvedDeviceCount = s.count(Pending)
	if code, msg := x.checkCaps(s); code != "" {
		if !plan.DryRun {
			return reject(code, msg, nil)
		}
		s.Warnings = append(s.Warnings, msg)
	}
	if rate := x.pacer.WriteRate(); rate > 0 {
		s.EstimatedDurationMS = int64(float64(s.ResolvedDeviceCount) / rate * 1000)
	}
	if plan.Rollout != nil {
		s.Rollout = NewRolloutStatus(plan.Rollout, s.ResolvedDeviceCount)
	}
	p := &Prepared{x: x, s: s, started: started}
	if plan.DryRun {
		s.Status = StatusPlanned
		for i := range s.Devices {
			if s.Devices[i].Outcome == Pending {
				s.Devices[i].Outcome = Planned
			}
		}
		x.cancel()
		p.done = true
		e.finish(s, x, started)
	}
	return p, nil
}

// Pending is the number of devices left to trigger (0 for a dry run).
func (p *Prepared) Pending() int { return p.s.count(Pending) }

// Discard gives up a prepared run without triggering anything.
func (p *Prepared) Discard() {
	p.x.cancel()
	p.done = true
}

// Devices is the number of devices the run's summary accounts for.
func (p *Prepared) Devices() int { return len(p.s.Devices) }

// Estimated is how long triggering the run's devices takes at the write
// pace (0 when the pace is unlimited).
func (p *Prepared) Estimated() time.Duration {
	return time.Duration(p.s.EstimatedDurationMS) * time.Millisecond
}

// Execute triggers the pending devices within the run's deadline and
// returns the final summary (a dry run's at once).
func (p *Prepared) Execute() *Summary {
	if p.done {
		return p.s
	}
	defer p.x.cancel()
	p.done = true
	p.x.triggerAll(p.s.Devices, p.x.plan.Items)
	p.x.markCooldown(p.s)
	return p.x.engine.finish(p.s, p.x, p.started)
}

// Queue ends the synchronous part of the run for workers to carry on: the
// summary so far, with status accepted, in which the devices left to
// trigger are still Pending.
func (p *Prepared) Queue() *Summary {
	if p.done {
		return p.s
	}
	p.x.cancel()
	p.done = true
	p.x.account(p.s)
	p.s.Status = StatusAccepted
	return p.s
}

// Trigger triggers items in tenant for a worker of an asynchronous run,
// within ctx's deadline (less headroom), and returns one result per item,
// in order: items the deadline left are not_attempted with reason
// deadline. Accepted triggers are recorded in the cooldown store.
func (e *Engine) Trigger(ctx context.Context, tenant string, items []Item) ([]DeviceResult, Throttling) {
	x := e.newExecution(ctx, time.Now(), 0, tenant)
	defer x.cancel()
	x.plan = Plan{Items: items}
	s := &Summary{Devices: make([]DeviceResult, len(items))}
	for i, it := range items {
		s.Devices[i] = DeviceResult{DeviceID: it.DeviceID, ScriptPolicyID: it.ScriptPolicyID, Collection: string(it.Collection), Outcome: Pending}
	}
	x.triggerAll(s.Devices, items)
	x.markCooldown(s)
	return s.Devices, x.throttling()
}

// WriteRate is the engine's write pace in triggers per second (0 when
// unlimited).
func (e *Engine) WriteRate() float64 { return e.pacer.WriteRate() }

// PausedFor is how long tenant's 429 gate stays closed from now.
func (e *Engine) PausedFor(tenant string) time.Duration { return e.pacer.For(tenant).PausedFor() }

// reject ends a run before anything is triggered: every device not yet
// accounted for is not_attempted with reason run_rejected.
func (e *Engine) reject(s *Summary, x *execution, started time.Time, code fault.Code, msg string, details []fault.FieldError) *Summary {
	if s.Devices == nil {
		for _, it := range x.plan.Items {
			s.Devices = append(s.Devices, DeviceResult{DeviceID: it.DeviceID, ScriptPolicyID: it.ScriptPolicyID, Collection: string(it.Collection)})
		}
	}
	for i := range s.Devices {
		if d := &s.Devices[i]; d.Outcome == "" || d.Outcome == Pending {
			d.Outcome, d.Reason = NotAttempted, ReasonRunRejected
		}
	}
	s.Status = StatusRejected
	s.Error = &ErrorInfo{Code: code, Message: msg, Details: details}
	return e.finish(s, x, started)
}

func (e *Engine) finish(s *Summary, x *execution, started time.Time) *Summary {
	for i := range s.Devices {
		if d := &s.Devices[i]; d.Outcome == Pending {
			x.notAttempted(d)
		}
	}
	x.account(s)
	fin := time.Now()
	s.FinishedAt = fin.UTC()
	s.DurationMS = fin.Sub(started).Milliseconds()
	e.log.Info("run finished", "run_id", s.RunID, "status", s.Status, "dry_run", s.DryRun,
		"total", s.Counts.Total, "succeeded", s.Counts.Succeeded, "failed", s.Counts.Failed,
		"skipped", s.Counts.Skipped, "not_attempted", s.Counts.NotAttempted,
		"throttled", s.Throttling.ThrottledResponses, "duration_ms", s.DurationMS)
	return s
}

// execution is the state of one engine pass over Graph: a run's
// preparation and triggers, a worker's slice, or a reader's lookups.
type execution struct {
	engine *Engine
	plan   Plan
	// runCtx ends when no new call may start (deadline minus headroom) or
	// when the caller's context is cancelled; callCtx bounds calls already
	// in flight (half the headroom later) but is not cancelled with the
	// caller's context, so a shutdown lets them finish and be accounted
	// for.
	runCtx, callCtx context.Context
	cancel          func()
	// pacer is the budget of the tenant the execution acts in.
	pacer    *pace.Pacer
	began    time.Time
	throttle *throttleLog
	warnMu   sync.Mutex
	warnings []string
	// listed counts the devices read from device lists (MaxListed).
	listed atomic.Int64
	// tooMany is set when selectors found more than the run's cap;
	// reached is the count that went past it.
	tooMany bool
	reached int
}

// newExecution derives an execution's contexts from ctx's deadline and
// invoke (0 for none), whichever ends first; it is paced by tenant's
// budget.
func (e *Engine) newExecution(ctx context.Context, now time.Time, invoke time.Duration, tenant string) *execution {
	x := &execution{engine: e, throttle: &throttleLog{}, pacer: e.pacer.For(tenant), began: now}
	end, ok := ctx.Deadline()
	if invoke > 0 && (!ok || now.Add(invoke).Before(end)) {
		end, ok = now.Add(invoke), true
	}
	detached := context.WithoutCancel(ctx)
	if !ok {
		var c1 context.CancelFunc
		x.runCtx, c1 = context.WithCancel(ctx)
		x.callCtx, x.cancel = detached, func() { c1() }
		return x
	}
	headroom := min(e.cfg.Headroom, end.Sub(now)/10)
	runCtx, c1 := context.WithDeadline(ctx, end.Add(-headroom))
	callCtx, c2 := context.WithDeadline(detached, end.Add(-headroom/2))
	x.runCtx, x.callCtx, x.cancel = runCtx, callCtx, func() { c1(); c2() }
	return x
}

// deviceCap is the run's device cap and its name: the plan's own (a
// caller's policy) when lower than MAX_DEVICES_PER_RUN; 0 is none.
func (x *execution) deviceCap() (int, string) {
	limit, name := x.engine.cfg.MaxDevices, "MAX_DEVICES_PER_RUN"
	if m := x.plan.MaxDevices; m > 0 && (limit <= 0 || m < limit) {
		limit, name = m, x.plan.CapName
	}
	return limit, name
}

// account adds the execution's warnings and throttling to s and counts its
// devices.
func (x *execution) account(s *Summary) {
	if why, ok := x.pacer.FellBackSince(x.began); ok {
		x.warn("the shared Graph budget in Azure Storage could not be reached (" + why + "); this process paced itself at its local share, " +
			"the tenant's pace over the processes storage last saw using it (1/BUDGET_PROCESSES if it saw none), so the run was slower")
	}
	for _, n := range x.pacer.NotesSince(x.began) {
		x.warn(n)
	}
	s.Warnings = append(s.Warnings, x.warnings...)
	s.Throttling = x.throttling()
	s.tally()
}

func (x *execution) throttling() Throttling {
	n, capped := x.throttle.count()
	return Throttling{ThrottledResponses: n, WaitedMS: x.throttle.waited().Milliseconds(), RetryAfterCapped: capped}
}

// stopReason says why no more calls may start: the run was canceled, the
// tenant is paused by Intune's Retry-After (the time ran out waiting for
// it: throttled, not a timeout to raise), or the time ran out.
func (x *execution) stopReason() string {
	switch {
	case errors.Is(context.Cause(x.runCtx), context.Canceled):
		return ReasonCanceled
	case x.pacer.PausedFor() > 0:
		return ReasonThrottled
	}
	return ReasonDeadline
}

// notAttempted ends res unsent for stopReason, saying when a throttling
// pause ends.
func (x *execution) notAttempted(res *DeviceResult) {
	res.Outcome, res.Reason, res.Message = NotAttempted, x.stopReason(), ""
	if res.Reason == ReasonThrottled {
		res.Message = "Intune has paused this tenant's calls (Retry-After) until " + time.Now().Add(x.pacer.PausedFor()).UTC().Format(time.RFC3339) + "; the run's time ran out before then"
	}
}

// triggerAll triggers every pending device of results (results[i] is
// items[i]'s) until the execution's time runs out.
func (x *execution) triggerAll(results []DeviceResult, items []Item) {
	var g errgroup.Group
	g.SetLimit(x.engine.cfg.Concurrency)
	for i, it := range items {
		if results[i].Outcome != Pending {
			continue
		}
		if x.runCtx.Err() != nil {
			x.notAttempted(&results[i])
			continue
		}
		g.Go(func() error {
			x.trigger(it, &results[i])
			return nil
		})
	}
	_ = g.Wait()
}

// trigger sends one device's trigger under the retry policy.
func (x *execution) trigger(it Item, res *DeviceResult) {
	var resp intune.Response
	attempts, last, err := x.call(write, func(ctx context.Context) error {
		var err error
		resp, err = x.engine.graph.Trigger(ctx, it.Collection, it.DeviceID, it.ScriptPolicyID)
		return err
	})
	res.Attempts = attempts
	if err == nil {
		res.Outcome, res.Reason, res.Message, res.TriggeredAt = Succeeded, "", "", last
		res.HTTPStatus, res.RequestID = resp.Status, resp.RequestID
		return
	}
	ge := asGraphError(err)
	res.Outcome = Failed
	res.HTTPStatus, res.ErrorCode, res.RequestID, res.Message = ge.Status, ge.Code, ge.RequestID, ge.Message
	switch {
	case errors.Is(err, errNoTime) && attempts == 0:
		x.notAttempted(res)
	case errors.Is(err, errNoTime) && ge.Throttled():
		x.notAttempted(res)
		res.Reason = ReasonThrottled
		if res.Message == "" {
			res.Message = "still throttled when the run's time ran out; Intune did not accept the trigger"
		}
	case ge.Unavailable():
		res.Reason = ReasonOutcomeUnknown
		res.Message = "no definite answer (" + ge.Message + "); the trigger may have taken effect"
		if errors.Is(err, errNoTime) {
			res.Message = "no definite answer (" + ge.Message + ") and no time left to retry; the trigger may have taken effect"
		}
	case ge.Status == 403:
		res.Message += " — " + triggerPermissionHint
	}
}

// Permission hints for Graph 403s: the reference page lists only Read
// scopes for the trigger, but practitioners get 403 without
// PrivilegedOperations.All.
const (
	triggerPermissionHint = "the app needs the Graph application permission DeviceManagementManagedDevices.PrivilegedOperations.All (with admin consent) to trigger remediations"
	lookupPermissionHint  = "the app needs the Graph application permission DeviceManagementManagedDevices.Read.All to look devices up"
)

func asGraphError(err error) *intune.Error {
	var ge *intune.Error
	if errors.As(err, &ge) {
		return ge
	}
	return &intune.Error{Message: err.Error(), Transport: true, Err: err}
}

// IsRunID reports whether id has the form of a run id: 24 lowercase hex
// digits.
func IsRunID(id string) bool {
	if len(id) != 24 {
		return false
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func newRunID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
