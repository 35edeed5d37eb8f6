package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/remediate"
)

// Options tune a Service.
type Options struct {
	// ChunkSize is the number of devices per queue message, at most
	// MaxChunk (the default).
	ChunkSize int
	// SliceSize is the number of devices a worker claims, triggers and
	// records at a time (one storage transaction each way). Default 32:
	// about 4 s of triggers at Intune's pace.
	SliceSize int
	// ClaimLease is how long a claimed device is left to the worker that
	// claimed it before another treats that worker as gone. It must exceed
	// the time one slice can take. Default DefaultFunctionTimeout
	// (the lease is the function's timeout).
	ClaimLease time.Duration
	// PageSize is the number of devices per status page. Default 1,000.
	PageSize int
	// RecordMargin is the time a worker keeps, beyond a slice's triggers,
	// to record it before its deadline. Default 5 s.
	RecordMargin time.Duration
	// Retention is how long runs are kept (RUN_RETENTION). Default 30 days.
	Retention time.Duration
	// MaxRunDuration is the longest a run may go on (RUN_MAX_DURATION): a
	// run not finished by then is deleted that long after its retention.
	// Default 7 days.
	MaxRunDuration time.Duration
	// CooldownPeriod is DEVICE_COOLDOWN: older cooldown rows are deleted.
	CooldownPeriod time.Duration
	// CleanupMaxOps bounds the storage operations of one cleanup
	// (CLEANUP_MAX_OPS). Default 2,000.
	CleanupMaxOps int
	// FollowCache is how long a page's follow=true results are reused
	// (FOLLOW_CACHE; default 30 s, negative for none); FollowCacheBytes
	// bounds what they take (FOLLOW_CACHE_MB; default 16 MiB).
	FollowCache      time.Duration
	FollowCacheBytes int
	// QueuedChunks is how many chunks of one run are on the queue at a
	// time (RUN_QUEUED_CHUNKS): the next is queued as one finishes, so a
	// small run submitted behind a big one waits for a few chunks, not
	// for all of them. Default 2.
	QueuedChunks int
}

// Service submits runs, works their chunks and reports their status.
type Service struct {
	store   Store
	queue   Queue
	engine  *remediate.Engine
	opts    Options
	log     *slog.Logger
	follows *followCache
}

// The defaults of Options, which config's settings table reads too.
const (
	// DefaultFunctionTimeout is the Functions host's default function
	// timeout (host.json's functionTimeout, FUNCTION_TIMEOUT): the
	// default lease of a chunk's claim.
	DefaultFunctionTimeout = 5 * time.Minute
	// DefaultPageSize is RUN_PAGE_SIZE: devices per page of a run's status.
	DefaultPageSize = 1000
	// DefaultMaxRunDuration is RUN_MAX_DURATION.
	DefaultMaxRunDuration = 7 * 24 * time.Hour
	// DefaultRetention is RUN_RETENTION.
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultQueuedChunks is RUN_QUEUED_CHUNKS.
	DefaultQueuedChunks = 2
	// DefaultFollowCache is FOLLOW_CACHE.
	DefaultFollowCache = 30 * time.Second
	// DefaultFollowCacheBytes is FOLLOW_CACHE_MB in bytes.
	DefaultFollowCacheBytes = 16 << 20
	// DefaultCleanupMaxOps is CLEANUP_MAX_OPS.
	DefaultCleanupMaxOps = 2000
)

// New returns a Service.
func New(store Store, queue Queue, engine *remediate.Engine, opts Options, log *slog.Logger) *Service {
	if opts.ChunkSize <= 0 || opts.ChunkSize > MaxChunk {
		opts.ChunkSize = MaxChunk
	}
	if opts.SliceSize <= 0 {
		opts.SliceSize = 32
	}
	opts.SliceSize = min(opts.SliceSize, 99, opts.ChunkSize)
	if opts.ClaimLease <= 0 {
		opts.ClaimLease = DefaultFunctionTimeout
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.RecordMargin <= 0 {
		opts.RecordMargin = 5 * time.Second
	}
	if opts.MaxRunDuration <= 0 {
		opts.MaxRunDuration = DefaultMaxRunDuration
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.CleanupMaxOps < 6 {
		opts.CleanupMaxOps = DefaultCleanupMaxOps
	}
	if opts.QueuedChunks <= 0 {
		opts.QueuedChunks = DefaultQueuedChunks
	}
	if opts.FollowCache == 0 {
		opts.FollowCache = DefaultFollowCache
	}
	if opts.FollowCacheBytes <= 0 {
		opts.FollowCacheBytes = DefaultFollowCacheBytes
	}
	return &Service{store: store, queue: queue, engine: engine, opts: opts, log: log,
		follows: newFollowCache(opts.FollowCache, opts.FollowCacheBytes)}
}

// Submit writes a prepared run (its summary from remediate.Prepared.Queue,
// in which the devices left to trigger are Pending) and queues its chunks.
// When it returns nil, every device is in the store and every chunk in the
// queue.
func (s *Service) Submit(ctx context.Context, sum *remediate.Summary, tenant, caller string) error {
	first := 0
	if sum.Rollout != nil {
		first = waveOrder(sum)
	}
	header := *sum
	header.Devices = nil
	head, err := json.Marshal(&header)
	if err != nil {
		return fmt.Errorf("runs: encoding the run: %w", err)
	}
	m := Meta{RunID: sum.RunID, TenantID: tenant, Caller: caller, Created: time.Now().UTC(), Devices: len(sum.Devices), Summary: head}
	rows := make([]Row, len(sum.Devices))
	var pending []int
	for i, d := range sum.Devices {
		rows[i] = Row{Index: i, DeviceResult: d}
		if d.Outcome == remediate.Pending {
			pending = append(pending, i)
		} else {
			m.Base.Add(d.Outcome)
		}
	}
	var msgs []Message
	var chunks []Chunk
	// A run without waves is one wave (0) of all its devices.
	waves := []int{len(pending)}
	if sum.Rollout != nil {
		m.Rollout = &Rollout{Status: *sum.Rollout, First: first}
		waves = waves[:0]
		for _, w := range sum.Rollout.Waves {
			waves = append(waves, w.Devices)
		}
	}
	from := 0
	for w, to := range waves {
		for start := from; start < to; start += s.opts.ChunkSize {
			idx := pending[start:min(start+s.opts.ChunkSize, to)]
			msg := Message{RunID: sum.RunID, Chunk: len(chunks), Items: make([]WorkItem, len(idx))}
			for j, i := range idx {
				d := sum.Devices[i]
				msg.Items[j] = WorkItem{Index: i, DeviceID: d.DeviceID, ScriptID: d.ScriptPolicyID, Collection: d.Collection}
			}
			c := Chunk{Number: len(chunks), Open: len(idx), Items: append([]int(nil), idx...), Queued: w == 0 && len(chunks) < s.opts.QueuedChunks}
			if m.Rollout != nil {
				c.Wave = w + 1
			}
			chunks = append(chunks, c)
			if c.Queued {
				msgs = append(msgs, msg)
			}
		}
		from = to
	}
	if err := s.store.CreateRun(ctx, m, rows, chunks); err != nil {
		return fmt.Errorf("runs: storing run %s: %w", m.RunID, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, msg := range msgs {
		g.Go(func() error { return s.queue.Send(gctx, msg, 0) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("runs: queueing run %s: %w", m.RunID, err)
	}
	s.log.Info("run queued", "run_id", m.RunID, "devices", m.Devices, "queued", len(pending), "chunks", len(chunks), "chunks_on_queue", len(msgs))
	return nil
}

// Status is a run's state for GET runs/{id}: Done with the final summary
// (one page of devices), or running with the progress so far.
type Status struct {
	Done bool
	// Summary is the run's summary; its Devices are the requested page.
	Summary *remediate.Summary
	// Queued is the number of devices workers have yet to do.
	Queued     int
	Page       int
	PageCount  int
	RetryAfter time.Duration
}

// callersRun is the header of run id if caller submitted it, else
// ErrNotFound, as if it did not exist.
func (s *Service) callersRun(ctx context.Context, id, caller string) (Meta, error) {
	if !remediate.IsRunID(id) {
		// Not an id this service ever gave out (bytes that are not text
		// included): no storage call.
		return Meta{}, ErrNotFound
	}
	m, err := s.store.Meta(ctx, id)
	if err == nil && m.Caller != caller {
		err = ErrNotFound
	}
	return m, err
}

// Status reads run id for caller: its counts, and page (0-based) of its
// devices. With follow, triggered devices on the page get their scripts'
// results from Intune's run states. A run another caller submitted is
// ErrNotFound, as if it did not exist.
func (s *Service) Status(ctx context.Context, id, caller string, page int, follow bool) (Status, error) {
	m, err := s.callersRun(ctx, id, caller)
	if err != nil {
		return Status{}, err
	}
	var sum remediate.Summary
	if err := json.Unmarshal(m.Summary, &sum); err != nil {
		return Status{}, fmt.Errorf("runs: run %s is unreadable: %w", id, err)
	}
	chunks, err := s.store.Chunks(ctx, id)
	if err != nil {
		return Status{}, err
	}
	st := Status{Summary: &sum, Page: page, PageCount: max(1, (m.Devices+s.opts.PageSize-1)/s.opts.PageSize)}
	counts := m.Base
	var finished time.Time
	for _, c := range chunks {
		counts.Merge(c.Counts)
		st.Queued += c.Open
		sum.Throttling.ThrottledResponses += c.Throttle.ThrottledResponses
		sum.Throttling.RetryAfterCapped += c.Throttle.RetryAfterCapped
		sum.Throttling.WaitedMS += c.Throttle.WaitedMS
		if c.Finished.After(finished) {
			finished = c.Finished
		}
	}
	counts.NotAttempted += st.Queued
	counts.Total += st.Queued
	sum.Counts = counts
	st.Done = st.Queued == 0
	halted := false
	if ro := m.Rollout; ro != nil {
		rs := ro.Status
		rs.Waves = append([]remediate.WaveStatus(nil), rs.Waves...)
		sum.Rollout = &rs
		halted = rs.Halted != "" && m.Cancelled.IsZero()
		st.Done = st.Done || halted
	}
	if !m.Cancelled.IsZero() {
		sum.Warnings = append(sum.Warnings, fmt.Sprintf("the run was cancelled at %s: devices not yet triggered end not_attempted, reason cancelled",
			m.Cancelled.Format(time.RFC3339)))
	}
	if st.Done {
		sum.Status = counts.Status()
		if !m.Cancelled.IsZero() {
			sum.Status = remediate.StatusCancelled
		}
		if halted {
			sum.Status = remediate.StatusHalted
		}
		if finished.IsZero() {
			finished = m.Created
		}
		sum.FinishedAt = finished
		sum.DurationMS = finished.Sub(sum.StartedAt).Milliseconds()
	} else {
		sum.Status = remediate.StatusRunning
		st.RetryAfter = s.retryAfter(st.Queued)
	}
	if page < 0 || page >= st.PageCount {
		return st, fmt.Errorf("%w: page %d of %d", ErrNoPage, page, st.PageCount)
	}
	rows, err := s.store.Rows(ctx, id, page*s.opts.PageSize, min((page+1)*s.opts.PageSize, m.Devices))
	if err != nil {
		return Status{}, err
	}
	sum.Devices = make([]remediate.DeviceResult, len(rows))
	for i, r := range rows {
		sum.Devices[i] = r.Answered()
		if halted && r.Outcome == remediate.Pending {
			sum.Devices[i].Reason = remediate.ReasonHalted
		}
	}
	key := id + "/" + strconv.Itoa(st.Page)
	if follow && !s.follows.get(key, sum.Devices) {
		// The scripts' results are read in the run's tenant, with its
		// credential.
		fctx, err := s.engine.Credential(ctx, m.TenantID)
		if err == nil {
			err = s.follow(fctx, m.TenantID, sum.Devices)
		}
		if err != nil {
			sum.Warnings = append(sum.Warnings, "follow-up incomplete: "+err.Error())
		} else {
			s.follows.put(key, sum.Devices)
		}
	}
	return st, nil
}

// ErrNoPage is returned by Status for a page past the last.
var ErrNoPage = errors.New("runs: no such page")

// retryAfter suggests when to poll again: the time the queued devices take
// at the write pace, between 5 and 60 s.
func (s *Service) retryAfter(queued int) time.Duration {
	d := 20 * time.Second
	if rate := s.engine.WriteRate(); rate > 0 {
		d = time.Duration(float64(queued) / rate * float64(time.Second))
	}
	return min(max(d, 5*time.Second), 60*time.Second)
}

// follow reads the run states of the scripts the triggered devices ran,
// one list per script, and stops as soon as every device is found.
func (s *Service) follow(ctx context.Context, tenant string, devs []remediate.DeviceResult) error {
	want := map[string]map[string]int{} // script → device → index
	for i, d := range devs {
		if d.Outcome != remediate.Succeeded {
			continue
		}
		sc := strings.ToLower(d.ScriptPolicyID)
		if want[sc] == nil {
			want[sc] = map[string]int{}
		}
		want[sc][strings.ToLower(d.DeviceID)] = i
		devs[i].FollowUp = &remediate.FollowUp{State: remediate.FollowPending}
	}
	var errs []error
	for sc, byDevice := range want {
		left := len(byDevice)
		err := s.engine.RunStates(ctx, tenant, sc, func(states []intune.RunState) bool {
			for _, st := range states {
				i, ok := byDevice[strings.ToLower(st.ManagedDevice.ID)]
				if !ok {
					continue
				}
				f := remediate.FollowUpOf(st, devs[i].TriggeredAt)
				devs[i].FollowUp = &f
				left--
			}
			return left > 0
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("script %s: %w", sc, err))
		}
	}
	return errors.Join(errs...)
}

// Cleanup deletes what has outlived its retention: runs older than
// Retention, expired idempotency keys, cooldown rows older than the
// cooldown period, within CleanupMaxOps storage operations (a timer calls
// it; what is left waits for the next call). A store that keeps nothing
// (in memory) has nothing to clean.
func (s *Service) Cleanup(ctx context.Context) (Cleaned, error) {
	c, ok := s.store.(Cleaner)
	if !ok {
		return Cleaned{Done: true}, nil
	}
	now := time.Now()
	cleaned, err := c.Cleanup(ctx, Retention{RunsBefore: now.Add(-s.opts.Retention), UnfinishedBefore: now.Add(-s.opts.Retention - s.opts.MaxRunDuration),
		CooldownBefore: now.Add(-s.opts.CooldownPeriod),
		Now:            now, MaxOps: s.opts.CleanupMaxOps})
	if err != nil {
		return cleaned, fmt.Errorf("runs: cleanup: %w", err)
	}
	s.log.Info("cleanup", "runs_deleted", cleaned.Runs, "keys_deleted", cleaned.Keys, "cooldowns_deleted", cleaned.Cooldowns, "done", cleaned.Done)
	return cleaned, nil
}
