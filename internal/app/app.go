// Package app is remediator's application service: what every trigger
// asks of it, whatever its transport. HTTP requests (through package
// httpapi, on every host), timers and EventBridge schedules call
// Remediate, alerts MapAlert and Alert, pollers Status. It decodes and
// validates requests, resolves the run's credential, and decides between
// answering at once and handing the run to workers. Its refusals are
// *fault.Error values with a code; the HTTP layer alone turns codes into
// statuses.
package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/alert"
	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// CallerPolicy maps callers to what they may do: "function-key" (every
// holder of a function key), "principal:<object id>" (App Service
// Authentication), "iam:<ARN>" (Lambda with IAM auth), or "*" for any
// caller not listed. A caller matching no entry may do nothing.
type CallerPolicy map[string]CallerRule

// CallerRule limits one caller. An empty list, or one holding "*",
// allows any value.
type CallerRule struct {
	// Scripts are the script ids the caller may run.
	Scripts []string `json:"scripts"`
	// Tenants are the tenant ids the caller may act in ("default" for the
	// deployment's own tenant).
	Tenants []string `json:"tenants"`
	// MaxDevices caps the caller's runs below MAX_DEVICES_PER_RUN; 0 is
	// the deployment's cap.
	MaxDevices int `json:"max_devices"`
}

// Options configure the Service.
type Options struct {
	// Limits bound requests.
	Limits remediate.Limits
	// Alerts map Azure Monitor alerts to requests.
	Alerts alert.Settings
	// Runs, when set, takes runs that do not fit one answer (mode async,
	// or auto beyond the time left); nil keeps every run synchronous.
	Runs *runs.Service
	// Policy is what each caller may do (CALLER_POLICY); nil lets every
	// caller do everything. Scheduled runs (the deployment's own request)
	// are not subject to it.
	Policy CallerPolicy
	// MaxAnswerBytes bounds an answer (MAX_ANSWER_BYTES); a run whose
	// devices could not all be accounted for within it goes to workers,
	// or, without run storage, is refused before anything is triggered.
	// 0 is no bound.
	MaxAnswerBytes int
	// SyncBudget is the longest a mode auto run answers synchronously
	// (its triggers estimated at the write pace), below the callers' own
	// limits: Logic Apps and Power Automate give up on a call after 120 s
	// but follow a 202 by themselves. Default 90 s.
	SyncBudget time.Duration
}

// Service is the application service.
type Service struct {
	engine *remediate.Engine
	opts   Options
	log    *slog.Logger
}

// DefaultSyncBudget is SYNC_BUDGET: the longest a run is carried out in
// its request's own time (mode auto).
const DefaultSyncBudget = 90 * time.Second

// New returns a Service.
func New(engine *remediate.Engine, opts Options, log *slog.Logger) *Service {
	if opts.SyncBudget <= 0 {
		opts.SyncBudget = DefaultSyncBudget
	}
	return &Service{engine: engine, opts: opts, log: log}
}

// MinDeviceBytes is the most one device takes in an answer once the
// answer is compacted (ids, outcome, reason, status; no message): the
// number of devices a synchronous answer can promise to list.
const MinDeviceBytes = 256

// Result is a run's answer: Summary for a run carried out (or planned)
// here, Accepted for a run handed to workers.
type Result struct {
	Summary  *remediate.Summary
	Accepted *Accepted
}

// Accepted is a run handed to workers.
type Accepted struct {
	RunID               string
	ResolvedDeviceCount int
	Counts              remediate.Counts
	Queued              int
	Estimated           time.Duration
	Warnings            []string
}

// Caller is who sent a request, as the platform vouches for it.
type Caller struct {
	// ID scopes runs and idempotency keys: only this caller reads its runs
	// and replays its answers ("" is the shared caller, for hosts that
	// tell callers apart by nothing). CALLER_POLICY names a caller by it.
	ID string
	// Grants are further names CALLER_POLICY may give a rule to: Entra app
	// roles (role:<value>) and groups (group:<object id>) of an App
	// Service Authentication principal.
	Grants []string
	// Fallback is the rule a caller without one of its own falls back to
	// before "*" (function-key for every function-key caller).
	Fallback string
}

// Remediate decodes, validates and carries out a request body for caller
// (who alone may read an asynchronous run's status), within the caller's
// rule in the policy.
func (s *Service) Remediate(ctx context.Context, caller Caller, body []byte) (Result, error) {
	req, err := remediate.Decode(bytes.NewReader(body))
	if err != nil {
		return Result{}, asError(err)
	}
	return s.Start(ctx, caller, req)
}

// Scheduled carries out the deployment's own scheduled request (a timer,
// an EventBridge schedule): the shared caller's, outside any policy.
func (s *Service) Scheduled(ctx context.Context, body []byte) (Result, error) {
	req, err := remediate.Decode(bytes.NewReader(body))
	if err != nil {
		return Result{}, asError(err)
	}
	return s.start(ctx, Caller{}, req, false)
}

// Start carries out a decoded request: at once when it fits the time the
// caller has (and the synchronous budget, in mode auto), else on workers.
func (s *Service) Start(ctx context.Context, caller Caller, req remediate.Request) (Result, error) {
	return s.start(ctx, caller, req, true)
}

func (s *Service) start(ctx context.Context, caller Caller, req remediate.Request, policed bool) (Result, error) {
	plan, err := remediate.Validate(req, s.opts.Limits)
	if err != nil {
		return Result{}, asError(err)
	}
	if policed {
		if err := s.allowed(caller, &plan); err != nil {
			return Result{}, err
		}
	}
	if s.opts.Runs == nil && plan.Mode == remediate.ModeAsync && !plan.DryRun {
		return Result{}, fault.Invalid("mode", "async needs run storage: this deployment runs synchronously only (no run storage is configured)")
	}
	p, err := s.engine.Prepare(ctx, plan)
	if err != nil {
		return Result{}, asError(err)
	}
	tooBig := s.opts.MaxAnswerBytes > 0 && p.Devices()*MinDeviceBytes > s.opts.MaxAnswerBytes
	async := plan.Mode == remediate.ModeAsync || plan.Mode == remediate.ModeAuto && (tooBig || !fits(ctx, p.Estimated(), s.opts.SyncBudget))
	if tooBig && (!async || s.opts.Runs == nil) && p.Pending() > 0 {
		// Never started blind: its answer could not account for every device.
		p.Discard()
		hint := ""
		if s.opts.Runs != nil {
			hint = ", or send it with mode async"
		}
		return Result{}, &fault.Error{Code: fault.AnswerTooLarge, Details: []fault.FieldError{{Field: "managed_devices", Message: "too many devices for one answer"}},
			Message: fmt.Sprintf("the run has %d devices; one answer accounts for at most %d (MAX_ANSWER_BYTES): split the request%s; nothing was triggered",
				p.Devices(), s.opts.MaxAnswerBytes/MinDeviceBytes, hint)}
	}
	if s.opts.Runs == nil || p.Pending() == 0 || !async {
		return Result{Summary: p.Execute()}, nil
	}
	queued := p.Pending()
	sum := p.Queue()
	if err := s.opts.Runs.Submit(ctx, sum, plan.TenantID, caller.ID); err != nil {
		s.log.Error("run could not be queued; nothing was triggered", "run_id", sum.RunID, "error", err.Error())
		return Result{}, &fault.Error{Code: fault.StorageUnavailable, RetryAfter: 30 * time.Second,
			Message: "the run could not be stored or queued; nothing was triggered, send it again"}
	}
	return Result{Accepted: &Accepted{RunID: sum.RunID, ResolvedDeviceCount: sum.ResolvedDeviceCount, Counts: sum.Counts,
		Queued: queued, Estimated: p.Estimated(), Warnings: sum.Warnings}}, nil
}

// callerName is how CALLER_POLICY names a caller.
func callerName(caller string) string {
	if caller == "" {
		return "function-key"
	}
	return caller
}

// allowed applies the caller's rules of the policy to plan before
// anything is read or triggered, and caps plan's devices at the rule's
// max_devices. The caller's rules are its own (by ID), those of its grants
// (roles, groups), else its fallback's, else "*": the request is allowed
// when one of them allows it, under that rule's cap.
func (s *Service) allowed(caller Caller, plan *remediate.Plan) error {
	if s.opts.Policy == nil {
		return nil
	}
	name, names, err := s.rules(caller)
	if err != nil {
		return err
	}
	var first error
	for _, n := range names {
		err := s.allowedBy(name, n, s.opts.Policy[n], plan)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// rules is the CALLER_POLICY rules caller matches (by name, then its
// grants, else its fallback or "*"), with its name; none is a refusal.
func (s *Service) rules(caller Caller) (name string, names []string, err error) {
	name = callerName(caller.ID)
	for _, n := range append([]string{name}, caller.Grants...) {
		if _, ok := s.opts.Policy[n]; ok {
			names = append(names, n)
		}
	}
	for _, n := range []string{caller.Fallback, "*"} {
		if _, ok := s.opts.Policy[n]; ok && n != "" && len(names) == 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return name, nil, &fault.Error{Code: fault.CallerNotAllowed, Message: fmt.Sprintf("caller %s has no rule in CALLER_POLICY (CALLER_POLICY); nothing was read or triggered", name),
			Details: []fault.FieldError{{Field: "", Message: fmt.Sprintf("caller %s has no rule in CALLER_POLICY", name)}}}
	}
	return name, names, nil
}

// Cancel stops run id for caller (runs.Service.Cancel): under
// CALLER_POLICY only a caller with a rule may, and only its own runs;
// another caller's run is not found. Cancelling again changes nothing.
func (s *Service) Cancel(ctx context.Context, caller Caller, id string) (runs.Status, error) {
	return s.act(ctx, caller, id, "cancelled", (*runs.Service).Cancel)
}

// Resume goes on with a halted rollout of the caller's
// (runs.Service.Resume), under the same rules as Cancel.
func (s *Service) Resume(ctx context.Context, caller Caller, id string) (runs.Status, error) {
	return s.act(ctx, caller, id, "resumed", (*runs.Service).Resume)
}

// act does action (a runs.Service method) to run id for caller.
func (s *Service) act(ctx context.Context, caller Caller, id, done string, action func(*runs.Service, context.Context, string, string) (runs.Status, error)) (runs.Status, error) {
	if s.opts.Runs == nil {
		return runs.Status{}, &fault.Error{Code: fault.NotFound, Message: "this deployment keeps no runs (no storage is configured)"}
	}
	if s.opts.Policy != nil {
		if _, _, err := s.rules(caller); err != nil {
			return runs.Status{}, err
		}
	}
	st, err := action(s.opts.Runs, ctx, id, caller.ID)
	switch {
	case errors.Is(err, runs.ErrNotFound):
		return st, &fault.Error{Code: fault.NotFound, Message: fmt.Sprintf("no run %q", id)}
	case err != nil:
		s.log.Error("run not "+done, "run_id", id, "error", err.Error())
		return st, &fault.Error{Code: fault.StorageUnavailable, RetryAfter: 10 * time.Second, Message: "the run could not be " + done + "; try again"}
	}
	s.log.Info("run "+done, "run_id", id, "caller", caller.ID)
	return st, nil
}

// allowedBy applies one rule (the policy's entry ruleName) to plan.
func (s *Service) allowedBy(name, ruleName string, rule CallerRule, plan *remediate.Plan) error {
	by := name
	if ruleName != name {
		by = name + " (as " + ruleName + ")"
	}
	refuse := func(field, msg string) error {
		return &fault.Error{Code: fault.CallerNotAllowed, Message: msg + " (CALLER_POLICY); nothing was read or triggered",
			Details: []fault.FieldError{{Field: field, Message: msg}}}
	}
	for _, id := range plan.ScriptIDs() {
		if !listed(rule.Scripts, id) {
			return refuse("script_policy_id", fmt.Sprintf("caller %s may not run script %s", by, id))
		}
	}
	tenant := plan.TenantID
	if tenant == "" {
		tenant = "default"
	}
	if !listed(rule.Tenants, tenant) {
		return refuse("tenant_id", fmt.Sprintf("caller %s may not act in tenant %s", by, tenant))
	}
	if rule.MaxDevices > 0 {
		if len(plan.Items) > rule.MaxDevices {
			return refuse("managed_devices", fmt.Sprintf("caller %s may trigger at most %d devices per run; the request lists %d", by, rule.MaxDevices, len(plan.Items)))
		}
		plan.MaxDevices, plan.CapName = rule.MaxDevices, "the max_devices of caller "+by+" in CALLER_POLICY"
	}
	return nil
}

// listed reports whether v is in list, which allows anything when empty
// or holding "*".
func listed(list []string, v string) bool {
	if len(list) == 0 {
		return true
	}
	for _, x := range list {
		if x == "*" || strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}

// fits reports whether triggers estimated to take d can be answered
// synchronously: within budget and four fifths of the time ctx has left.
func fits(ctx context.Context, d, budget time.Duration) bool {
	if d > budget {
		return false
	}
	dl, ok := ctx.Deadline()
	return !ok || d <= time.Until(dl)*4/5
}

// MapAlert reads an Azure Monitor alert (common alert schema). A resolved
// alert maps to Ignored; an alert that cannot be acted on is an *fault.Error
// (never one a retry could fix: action groups retry 5xx).
func (s *Service) MapAlert(body []byte, queryScript string) (alert.Mapping, error) {
	m, err := alert.Map(body, queryScript, s.opts.Alerts)
	if err != nil {
		return m, asError(err)
	}
	return m, nil
}

// Alert carries out a mapped alert's request. Alert runs skip ineligible
// devices rather than refusing.
func (s *Service) Alert(ctx context.Context, caller Caller, m alert.Mapping) (Result, error) {
	res, err := s.Start(ctx, caller, m.Request)
	note := append(append([]string(nil), m.Warnings...), "devices from the alert's "+m.Source+" (rule "+m.AlertRule+")")
	switch {
	case res.Summary != nil:
		res.Summary.Warnings = append(res.Summary.Warnings, note...)
	case res.Accepted != nil:
		res.Accepted.Warnings = append(res.Accepted.Warnings, note...)
	}
	if rej := remediate.Rejected(err); rej != nil {
		rej.Warnings = append(rej.Warnings, note...)
	}
	return res, err
}

// Status reads run id for caller (page is 0-based); follow adds each
// triggered device's script results. Another caller's run is not found.
func (s *Service) Status(ctx context.Context, caller, id string, page int, follow bool) (runs.Status, error) {
	if s.opts.Runs == nil {
		return runs.Status{}, &fault.Error{Code: fault.NotFound, Message: "this deployment keeps no runs (no storage is configured)"}
	}
	st, err := s.opts.Runs.Status(ctx, id, caller, page, follow)
	switch {
	case errors.Is(err, runs.ErrNotFound):
		return st, &fault.Error{Code: fault.NotFound, Message: fmt.Sprintf("no run %q", id)}
	case errors.Is(err, runs.ErrNoPage):
		e := fault.Invalid("page", "out of range")
		e.Message = "page: " + err.Error()
		return st, e
	case err != nil:
		s.log.Error("run status unavailable", "run_id", id, "error", err.Error())
		return st, &fault.Error{Code: fault.StorageUnavailable, RetryAfter: 10 * time.Second, Message: "the run could not be read; try again"}
	}
	return st, nil
}

// asError is err as a *fault.Error: the layers below return one, and
// anything else is a fault of remediator's own.
func asError(err error) error {
	var e *fault.Error
	if errors.As(err, &e) {
		return e
	}
	return &fault.Error{Code: fault.Internal, Message: err.Error()}
}
