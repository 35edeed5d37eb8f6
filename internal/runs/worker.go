package runs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/remediate"
)

// clockSkew is allowed between this process's clock and Intune's when a
// device's last on-demand action is compared with a claim.
const clockSkew = time.Minute

// Work carries out one queue message. Devices the run already finished are
// skipped; devices claimed by a worker that stopped mid-call are looked up
// in Intune's action record before anything is sent again. What the
// deadline (ctx) leaves is queued again as a new message of the same chunk.
// An error means the message should be delivered again.
func (s *Service) Work(ctx context.Context, msg Message) error {
	if msg.Gate > 0 {
		return s.gate(ctx, msg)
	}
	m, err := s.store.Meta(ctx, msg.RunID)
	if errors.Is(err, ErrNotFound) {
		s.log.Warn("work for an unknown run dropped", "run_id", msg.RunID, "chunk", msg.Chunk, "devices", len(msg.Items))
		return nil
	}
	if err != nil {
		return err
	}
	if ctx, err = s.engine.Credential(ctx, m.TenantID); err != nil {
		return fmt.Errorf("runs: credential for run %s: %w", msg.RunID, err)
	}
	c, rows, err := s.load(ctx, msg)
	if err != nil {
		return err
	}
	msg.Items = s.stored(msg, c, rows)
	todo, held, recovered := s.sort(ctx, m.TenantID, msg, rows)
	if !m.Cancelled.IsZero() {
		// The run was cancelled: what is still to do ends so; devices
		// whose trigger may be on its way are settled as always.
		recovered, todo = append(recovered, cancelled(m, todo, rows)...), nil
	}
	todo, refused, err := s.approved(ctx, m.TenantID, todo, rows)
	if err != nil {
		return err
	}
	if recovered = append(recovered, refused...); len(recovered) > 0 {
		if err := s.record(ctx, msg.RunID, c, recovered); err != nil {
			return err
		}
	}
	todo, held, err = s.slices(ctx, m.TenantID, msg, c, rows, todo, held)
	if err != nil {
		return err
	}
	// What is left goes back on the queue: devices to do at once, held
	// ones once their claims' lease has passed.
	// While Graph's 429 pause lasts, what is left waits as long on the
	// queue: a pause longer than the invocation must not turn into a
	// tight loop of messages.
	if err := s.requeue(ctx, msg, todo, s.engine.PausedFor(m.TenantID)); err != nil {
		return err
	}
	if err := s.requeue(ctx, msg, held, s.opts.ClaimLease); err != nil {
		return err
	}
	// The run's next chunk, once this one is done: an error makes the host
	// deliver this message again, which finds the chunk done and tries
	// once more. Invocations that leave work open read no chunk list.
	if c.Open > 0 {
		return nil
	}
	return s.queueMore(context.WithoutCancel(ctx), msg.RunID)
}

// slices sends todo a slice at a time, each claimed before its triggers
// go out, until the invocation's time runs out; it returns what is left
// to do and what is held (claimed by a delivery that may still send it).
func (s *Service) slices(ctx context.Context, tenant string, msg Message, c *Chunk, rows map[int]*Row, todo, held []WorkItem) ([]WorkItem, []WorkItem, error) {
	// Each slice is claimed before its triggers are sent; after the first,
	// a slice is claimed in the same write that records the slice before
	// it, so a slice costs one storage write, not two.
	claimed := 0 // the devices at the head of todo already claimed
	for len(todo) > 0 && ctx.Err() == nil {
		n := min(s.opts.SliceSize, len(todo))
		if m, stop := s.cancelledRun(ctx, msg.RunID); stop {
			// Cancelled while this chunk was worked: it stops here; the
			// devices claimed with the last slice's write were never sent.
			for _, it := range todo[:claimed] {
				rows[it.Index].ClaimedAt = time.Time{}
			}
			out := cancelled(m, todo, rows)
			if err := s.record(context.WithoutCancel(ctx), msg.RunID, c, out); err != nil {
				return nil, nil, err
			}
			return nil, held, nil
		}
		if claimed == 0 {
			if !s.timeFor(ctx, n) {
				break
			}
			if err := s.claim(ctx, msg.RunID, c, rows, todo[:n]); err != nil {
				if errors.Is(err, ErrConflict) {
					break // another worker has the chunk: hand the rest back below
				}
				return nil, nil, err
			}
		}
		slice := todo[:n]
		todo = todo[n:]
		next := todo[:min(s.opts.SliceSize, len(todo))]
		if !s.timeFor(ctx, n+len(next)) {
			next = nil
		}
		unsent, later, nextClaimed, err := s.trigger(ctx, tenant, msg.RunID, c, rows, slice, next)
		if err != nil {
			return nil, nil, err
		}
		claimed = 0
		if nextClaimed {
			claimed = len(next)
		}
		held = append(held, later...)
		if len(unsent) > 0 {
			// The deadline came mid-slice: what was not sent goes on.
			todo = append(unsent, todo...)
			break
		}
	}
	if claimed > 0 {
		// Claimed with the last slice's outcomes, never sent: unclaimed,
		// so that the next delivery sends them at once.
		out := make([]Row, claimed)
		for i, it := range todo[:claimed] {
			rows[it.Index].ClaimedAt = time.Time{}
			out[i] = *rows[it.Index]
		}
		rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := s.record(rec, msg.RunID, c, out)
		cancel()
		if err != nil {
			return nil, nil, fmt.Errorf("runs: unclaiming devices of chunk %d of run %s: %w", msg.Chunk, msg.RunID, err)
		}
	}
	return todo, held, nil
}

// requeue sends items back on the queue as a new message of msg's chunk,
// visible after after.
func (s *Service) requeue(ctx context.Context, msg Message, items []WorkItem, after time.Duration) error {
	if len(items) == 0 {
		return nil
	}
	next := Message{RunID: msg.RunID, Chunk: msg.Chunk, Items: items}
	if err := s.queue.Send(context.WithoutCancel(ctx), next, after); err != nil {
		return fmt.Errorf("runs: queueing the rest of chunk %d of run %s: %w", msg.Chunk, msg.RunID, err)
	}
	s.log.Info("chunk continued in a new message", "run_id", msg.RunID, "chunk", msg.Chunk, "devices", len(items), "after", after.String())
	return nil
}

// load reads the chunk and the rows of msg's items, by index.
func (s *Service) load(ctx context.Context, msg Message) (*Chunk, map[int]*Row, error) {
	c, err := s.store.Chunk(ctx, msg.RunID, msg.Chunk)
	if err != nil {
		return nil, nil, err
	}
	lo, hi := msg.Items[0].Index, msg.Items[0].Index
	for _, it := range msg.Items {
		lo, hi = min(lo, it.Index), max(hi, it.Index)
	}
	list, err := s.store.Rows(ctx, msg.RunID, lo, hi+1)
	if err != nil {
		return nil, nil, err
	}
	want := map[int]bool{}
	for _, it := range msg.Items {
		want[it.Index] = true
	}
	rows := map[int]*Row{}
	for i := range list {
		if want[list[i].Index] {
			rows[list[i].Index] = &list[i]
		}
	}
	for _, it := range msg.Items {
		if rows[it.Index] == nil {
			return nil, nil, fmt.Errorf("runs: run %s has no device %d", msg.RunID, it.Index)
		}
	}
	return &c, rows, nil
}

// stored is what a worker triggers for msg: the devices and scripts the
// stored run holds for the items of its chunk, never what the message
// says (whoever can write to the queue could name any device and
// script). Items outside the stored chunk are dropped.
func (s *Service) stored(msg Message, c *Chunk, rows map[int]*Row) []WorkItem {
	inChunk := map[int]bool{}
	for _, i := range c.Items {
		inChunk[i] = true
	}
	out := make([]WorkItem, 0, len(msg.Items))
	differ := 0
	for _, it := range msg.Items {
		r := rows[it.Index]
		if len(c.Items) > 0 && !inChunk[it.Index] {
			differ++
			continue
		}
		st := WorkItem{Index: it.Index, DeviceID: r.DeviceID, ScriptID: r.ScriptPolicyID, Collection: r.Collection}
		if st != it {
			differ++
		}
		out = append(out, st)
	}
	if differ > 0 {
		s.log.Warn("queue message differs from the stored run: the stored run is what is triggered", "run_id", msg.RunID, "chunk", msg.Chunk, "items", differ)
	}
	return out
}

// approved keeps the items whose script may still run (the allowlist and
// pins as configured now, each script checked once); the others end
// not_attempted, reason script_refused, in refused.
func (s *Service) approved(ctx context.Context, tenant string, todo []WorkItem, rows map[int]*Row) (ok []WorkItem, refused []Row, err error) {
	verdict := map[string]string{}
	for _, it := range todo {
		msg, seen := verdict[it.ScriptID]
		if !seen {
			var code fault.Code
			if code, msg, err = s.engine.ScriptApproved(ctx, tenant, it.ScriptID); err != nil {
				return nil, nil, fmt.Errorf("runs: script %s could not be checked: %w", it.ScriptID, err)
			}
			if code == "" {
				msg = ""
			}
			verdict[it.ScriptID] = msg
		}
		if msg == "" {
			ok = append(ok, it)
			continue
		}
		r := rows[it.Index]
		r.Outcome, r.Reason, r.Message = remediate.NotAttempted, remediate.ReasonScriptRefused, msg+"; not triggered"
		refused = append(refused, *r)
	}
	return ok, refused, nil
}

// sort splits msg's items: done ones are dropped, claims younger than the
// lease are held for later, older claims are resolved from Intune's action
// record (recovered as succeeded when the trigger took effect), the rest
// are to do. Rows it changed (recovered, given up, or checked once more)
// are returned to be saved.
func (s *Service) sort(ctx context.Context, tenant string, msg Message, rows map[int]*Row) (todo, held []WorkItem, recovered []Row) {
	var stale []WorkItem
	now := time.Now()
	for _, it := range msg.Items {
		r := rows[it.Index]
		switch {
		case r.final():
		case r.ClaimedAt.IsZero():
			todo = append(todo, it)
		case now.Sub(r.ClaimedAt) < s.opts.ClaimLease:
			held = append(held, it)
		default:
			stale = append(stale, it)
		}
	}
	if len(stale) == 0 {
		return todo, held, nil
	}
	ids := make([]string, len(stale))
	for i, it := range stale {
		ids[i] = it.DeviceID
	}
	found, errs := s.engine.Lookup(ctx, tenant, ids)
	for _, it := range stale {
		r := rows[it.Index]
		d := found[it.DeviceID]
		switch {
		case d != nil && d.OnDemandRemediationSince(r.ClaimedAt.Add(-clockSkew)):
			r.Outcome, r.Reason, r.HTTPStatus = remediate.Succeeded, "", 204
			r.TriggeredAt = r.ClaimedAt
			r.Attempts = max(r.Attempts, 1)
			r.Message = "the trigger's answer was never recorded (a worker stopped, or Graph did not answer); Intune's action record shows it took effect"
			recovered = append(recovered, *r)
		case d != nil || errs[it.DeviceID] != nil && errs[it.DeviceID].Status == 404:
			r.ClaimedAt = time.Time{} // not triggered: do it now
			todo = append(todo, it)
		case r.Checks+1 >= maxChecks:
			// Intune could not be asked, lease after lease: end the
			// device's part in the run rather than hold it forever.
			r.Outcome, r.Reason = remediate.Failed, remediate.ReasonOutcomeUnknown
			r.Message = fmt.Sprintf("a trigger was sent at %s without a definite answer, and Intune's action record could not be read %d times; the trigger may have taken effect",
				r.ClaimedAt.Format(time.RFC3339), maxChecks)
			recovered = append(recovered, *r)
		default:
			// Cannot tell yet: never risk a second trigger.
			r.Checks++
			held = append(held, it)
			recovered = append(recovered, *r)
		}
	}
	return todo, held, recovered
}

// maxChecks bounds how often a device whose trigger got no definite answer
// is looked for in Intune's action record without an answer (once per
// claim lease, 5 min by default: 50 minutes).
const maxChecks = 10

// settleUnknown asks Intune's action record about triggers that got no
// definite answer (a lost connection, a 503/504 that retries did not
// clear): recorded ones succeeded. The others are unsettled: a request cut
// off by a deadline may still be applied after the lookup, so they keep
// their claim and are looked at again once the claim lease has passed.
func (s *Service) settleUnknown(ctx context.Context, tenant string, slice []WorkItem, rows map[int]*Row, results []remediate.DeviceResult) map[int]bool {
	var ids []string
	for i, res := range results {
		if res.Reason == remediate.ReasonOutcomeUnknown {
			ids = append(ids, slice[i].DeviceID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	found, _ := s.engine.Lookup(lctx, tenant, ids)
	unsettled := map[int]bool{}
	for i := range results {
		res := &results[i]
		if res.Reason != remediate.ReasonOutcomeUnknown {
			continue
		}
		claimed := rows[slice[i].Index].ClaimedAt
		if d := found[slice[i].DeviceID]; d != nil && d.OnDemandRemediationSince(claimed.Add(-clockSkew)) {
			res.Outcome, res.Reason, res.TriggeredAt = remediate.Succeeded, "", claimed
			res.Message = "Graph gave no definite answer; Intune's action record shows the trigger took effect"
			continue
		}
		unsettled[i] = true
	}
	return unsettled
}

// timeFor reports whether a slice of n triggers fits in ctx's deadline at
// the write pace, with room to record it.
func (s *Service) timeFor(ctx context.Context, n int) bool {
	dl, ok := ctx.Deadline()
	if !ok {
		return true
	}
	left := time.Until(dl)
	need := min(s.opts.RecordMargin, left/4)
	if rate := s.engine.WriteRate(); rate > 0 {
		need += time.Duration(float64(n) / rate * float64(time.Second))
	}
	return left > need
}

// claim marks the slice's rows as being triggered now.
func (s *Service) claim(ctx context.Context, run string, c *Chunk, rows map[int]*Row, slice []WorkItem) error {
	now := time.Now().UTC()
	out := make([]Row, len(slice))
	for i, it := range slice {
		rows[it.Index].ClaimedAt = now
		out[i] = *rows[it.Index]
	}
	return s.store.Save(ctx, run, c, out)
}

// trigger sends the slice's triggers and records the outcomes, claiming
// next in the same write when every device of the slice was sent. Devices
// the deadline left unsent are unclaimed and returned, still to do;
// devices whose outcome is unsettled stay claimed and are returned as
// held.
func (s *Service) trigger(ctx context.Context, tenant, run string, c *Chunk, rows map[int]*Row, slice, next []WorkItem) (unsent, held []WorkItem, nextClaimed bool, err error) {
	items := make([]remediate.Item, len(slice))
	for i, it := range slice {
		items[i] = remediate.Item{DeviceID: it.DeviceID, ScriptPolicyID: it.ScriptID, Collection: intune.Collection(it.Collection)}
	}
	results, th := s.engine.Trigger(ctx, tenant, items)
	unsettled := s.settleUnknown(ctx, tenant, slice, rows, results)
	out := make([]Row, len(slice))
	for i, it := range slice {
		r := rows[it.Index]
		res := results[i]
		res.DeviceName = r.DeviceName
		if unsettled[i] {
			// Still claimed: resolved from the action record later.
			r.Attempts += res.Attempts
			held = append(held, it)
		} else if res.Outcome == remediate.NotAttempted {
			// Not sent: back to the queue with the rest.
			r.ClaimedAt = time.Time{}
			unsent = append(unsent, it)
		} else {
			r.DeviceResult = res
		}
		out[i] = *r
	}
	c.Throttle.ThrottledResponses += th.ThrottledResponses
	c.Throttle.RetryAfterCapped += th.RetryAfterCapped
	c.Throttle.WaitedMS += th.WaitedMS
	if len(unsent) == 0 && len(next) > 0 && ctx.Err() == nil {
		now := time.Now().UTC()
		for _, it := range next {
			rows[it.Index].ClaimedAt = now
			out = append(out, *rows[it.Index])
		}
		nextClaimed = true
	}
	// Recording must not be cut short by the deadline that ended the
	// triggers: the outcomes are what makes redelivery safe.
	rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.record(rec, run, c, out); err != nil {
		return nil, nil, false, fmt.Errorf("runs: recording chunk %d of run %s: %w", c.Number, run, err)
	}
	return unsent, held, nextClaimed, nil
}

// record saves rows that were open, with the chunk, in transactions of at
// most 99 rows; each transaction carries the chunk's counts for exactly
// the rows it writes, so the chunk never counts a device whose row was not
// written.
func (s *Service) record(ctx context.Context, run string, c *Chunk, rows []Row) error {
	for start := 0; start < len(rows); start += 99 {
		batch := rows[start:min(start+99, len(rows))]
		for _, r := range batch {
			if r.final() {
				c.Open--
				c.Counts.Add(r.Outcome)
			}
		}
		if c.Open == 0 {
			c.Finished = time.Now().UTC()
		}
		if err := s.store.Save(ctx, run, c, batch); err != nil {
			return err
		}
	}
	return nil
}

// Poison accounts for a message the queue gave up on (moved to the poison
// queue after maxDequeueCount failed deliveries): its devices not yet done
// fail with reason poison, so the run ends and no device is lost.
func (s *Service) Poison(ctx context.Context, msg Message) error {
	c, rows, err := s.load(ctx, msg)
	if errors.Is(err, ErrNotFound) {
		s.log.Error("poison message for an unknown run or chunk dropped", "run_id", msg.RunID, "chunk", msg.Chunk)
		return nil
	}
	if err != nil {
		return err
	}
	var out []Row
	for _, it := range msg.Items {
		r := rows[it.Index]
		if r.final() {
			continue
		}
		r.Outcome, r.Reason = remediate.Failed, remediate.ReasonPoison
		r.Message = "this device's work item failed on every delivery and was moved to the poison queue; the run did not trigger it"
		if !r.ClaimedAt.IsZero() {
			r.Message = "this device's work item failed on every delivery and was moved to the poison queue; a trigger may have been sent at " + r.ClaimedAt.Format(time.RFC3339)
		}
		out = append(out, *r)
	}
	s.log.Error("poison message accounted for", "run_id", msg.RunID, "chunk", msg.Chunk, "devices_failed", len(out))
	if err := s.record(ctx, msg.RunID, c, out); err != nil {
		return err
	}
	if c.Open > 0 {
		return nil // other messages of the chunk are still out
	}
	return s.queueMore(ctx, msg.RunID)
}
