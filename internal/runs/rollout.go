package runs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/remediator/remediator/internal/remediate"
)

// A rollout triggers a run's devices in waves. The devices to trigger are
// stored in wave order (a spread sample, reproducible for the run), so a
// wave is a range of the run's devices and its chunks ranges too; only
// the chunks of waves up to the one under way are queued. When the last
// chunk of a wave is done, a gate message is queued, delayed by the
// gate's poll: its worker reads the wave's script results through the
// tenant's read budget and passes the gate (the next wave's chunks are
// queued), halts the run, or queues itself again. No process waits
// between readings.

// waveOrder puts sum's devices in wave order: the devices final already
// first, as they were, then those to trigger in the run's sample order.
// It returns the index of the first device to trigger.
func waveOrder(sum *remediate.Summary) int {
	var done, pending []remediate.DeviceResult
	var ids []string
	for _, d := range sum.Devices {
		if d.Outcome == remediate.Pending {
			pending, ids = append(pending, d), append(ids, d.DeviceID)
		} else {
			done = append(done, d)
		}
	}
	out := append(make([]remediate.DeviceResult, 0, len(sum.Devices)), done...)
	for _, i := range remediate.SampleOrder(sum.RunID, ids) {
		out = append(out, pending[i])
	}
	sum.Devices = out
	return len(done)
}

// waveChunks is the chunks of run that may be queued now: those of the
// waves up to the one under way. When that wave is done and a later one
// waits behind its gate, it queues the gate's first reading (once) and
// reports false; a halted run queues nothing.
func (s *Service) waveChunks(ctx context.Context, run string, chunks []Chunk) ([]Chunk, bool, error) {
	m, err := s.store.Meta(ctx, run)
	if err != nil || m.Rollout == nil {
		return chunks, err == nil, err
	}
	ro := m.Rollout
	if ro.Status.Halted != "" && m.Cancelled.IsZero() {
		return nil, false, nil
	}
	current := ro.Status.Current
	var out []Chunk
	waveOpen := false
	for _, c := range chunks {
		if c.Wave <= current || !m.Cancelled.IsZero() {
			out = append(out, c)
			waveOpen = waveOpen || c.Open > 0
		}
	}
	if waveOpen || current >= len(ro.Status.Waves) || !m.Cancelled.IsZero() {
		return out, true, nil
	}
	// The wave is done: its gate is read after the poll, once.
	now := time.Now().UTC()
	started := false
	if _, err := s.store.Update(ctx, run, func(m *Meta) bool {
		if m.Rollout == nil || m.Rollout.Status.Current != current || !m.Rollout.WaveDone.IsZero() {
			return false
		}
		m.Rollout.WaveDone, started = now, true
		return true
	}); err != nil || !started {
		return nil, false, err
	}
	return nil, false, s.queue.Send(ctx, Message{RunID: run, Gate: current}, ro.Status.Gate.Poll)
}

// gate reads the gate of msg.Gate's wave and acts on its decision.
func (s *Service) gate(ctx context.Context, msg Message) error {
	m, err := s.store.Meta(ctx, msg.RunID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	ro := m.Rollout
	if ro == nil || !m.Cancelled.IsZero() || ro.Status.Halted != "" || ro.Status.Current != msg.Gate || msg.Gate > len(ro.Status.Waves) {
		return nil // a reading no longer wanted
	}
	fig, err := s.figures(ctx, m, msg.Gate)
	if err != nil {
		s.log.Warn("gate not read; read again after the poll", "run_id", m.RunID, "wave", msg.Gate, "error", err.Error())
		return s.queue.Send(ctx, msg, ro.Status.Gate.Poll)
	}
	now := time.Now().UTC()
	decision, reason := ro.Status.Gate.Decide(fig, now.Sub(ro.WaveDone))
	if _, err := s.store.Update(ctx, m.RunID, func(m *Meta) bool {
		r := m.Rollout
		if r == nil || r.Status.Current != msg.Gate || r.Status.Halted != "" {
			return false
		}
		w := &r.Status.Waves[msg.Gate-1]
		w.Triggered, w.Reported, w.Succeeded, w.Reason = fig.Triggered, fig.Reported, fig.Succeeded, reason
		w.SuccessShare = 0
		if fig.Reported > 0 {
			w.SuccessShare = float64(fig.Succeeded) / float64(fig.Reported)
		}
		switch decision {
		case remediate.GatePass:
			w.Decision, w.DecidedAt = decision, now
			r.Status.Current++
			r.WaveDone = time.Time{}
		case remediate.GateHalt:
			w.Decision, w.DecidedAt = decision, now
			r.Status.Halted = fmt.Sprintf("wave %d: %s", msg.Gate, reason)
		}
		return true
	}); err != nil {
		return err
	}
	s.log.Info("rollout gate", "run_id", m.RunID, "wave", msg.Gate, "decision", decision, "reason", reason)
	switch decision {
	case remediate.GatePass:
		return s.queueMore(context.WithoutCancel(ctx), m.RunID)
	case remediate.GateWait:
		return s.queue.Send(ctx, msg, ro.Status.Gate.Poll)
	}
	return nil
}

// figures reads wave's results: its triggered devices, and of those the
// ones whose script reported and succeeded (no issue or remediated).
func (s *Service) figures(ctx context.Context, m Meta, wave int) (remediate.GateFigures, error) {
	ro := m.Rollout
	from := ro.First
	if wave > 1 {
		from += ro.Status.Waves[wave-2].Devices
	}
	rows, err := s.store.Rows(ctx, m.RunID, from, ro.First+ro.Status.Waves[wave-1].Devices)
	if err != nil {
		return remediate.GateFigures{}, err
	}
	devs := make([]remediate.DeviceResult, len(rows))
	for i, r := range rows {
		devs[i] = r.DeviceResult
	}
	if ctx, err = s.engine.Credential(ctx, m.TenantID); err != nil {
		return remediate.GateFigures{}, err
	}
	if err := s.follow(ctx, m.TenantID, devs); err != nil {
		return remediate.GateFigures{}, err
	}
	var f remediate.GateFigures
	for _, d := range devs {
		if d.Outcome != remediate.Succeeded || d.FollowUp == nil {
			continue
		}
		f.Triggered++
		switch d.FollowUp.State {
		case remediate.FollowNoIssue, remediate.FollowRemediated:
			f.Reported++
			f.Succeeded++
		case remediate.FollowRemediationFailed, remediate.FollowScriptError:
			f.Reported++
		}
	}
	return f, nil
}

// Resume goes on with a halted rollout of the caller's: the halted
// wave's gate is overridden (its decision becomes resumed) and the next
// wave is triggered. A run that is not halted is left as it is. It
// returns the run's status (page 0).
func (s *Service) Resume(ctx context.Context, id, caller string) (Status, error) {
	if _, err := s.callersRun(ctx, id, caller); err != nil {
		return Status{}, err
	}
	resumed := false
	if _, err := s.store.Update(ctx, id, func(m *Meta) bool {
		r := m.Rollout
		if r == nil || r.Status.Halted == "" || !m.Cancelled.IsZero() || r.Status.Current >= len(r.Status.Waves) {
			return false
		}
		w := &r.Status.Waves[r.Status.Current-1]
		w.Decision, w.DecidedAt = remediate.GateResumed, time.Now().UTC()
		r.Status.Halted, r.WaveDone = "", time.Time{}
		r.Status.Current++
		resumed = true
		return true
	}); err != nil {
		return Status{}, err
	}
	if resumed {
		s.log.Info("rollout resumed", "run_id", id)
		if err := s.queueMore(context.WithoutCancel(ctx), id); err != nil {
			return Status{}, err
		}
	}
	return s.Status(ctx, id, caller, 0, false)
}
