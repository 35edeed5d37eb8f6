package runs_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/azstore"
	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
	"github.com/remediator/remediator/internal/testing/azurite"
	"github.com/remediator/remediator/internal/testing/simgraph"
)

// testQueue plays the queue trigger: messages wait until the test
// delivers them, and not before their visibility delay has passed.
type testQueue struct {
	mu   sync.Mutex
	msgs []queued
	// fifo pops in the order messages were sent, as a storage queue
	// roughly does, instead of lowest chunk first.
	fifo bool
}

type queued struct {
	runs.Message
	visible time.Time
}

func (q *testQueue) Send(_ context.Context, m runs.Message, after time.Duration) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.msgs = append(q.msgs, queued{m, time.Now().Add(after)})
	return nil
}

// pop takes the visible message of the lowest chunk (Submit sends
// concurrently; tests want an order), waiting for one to become visible.
func (q *testQueue) pop() (runs.Message, bool) {
	for {
		q.mu.Lock()
		if len(q.msgs) == 0 {
			q.mu.Unlock()
			return runs.Message{}, false
		}
		first, soonest := -1, q.msgs[0].visible
		for i, m := range q.msgs {
			if m.visible.Before(soonest) {
				soonest = m.visible
			}
			if !m.visible.After(time.Now()) && (first < 0 || !q.fifo && m.Chunk < q.msgs[first].Chunk) {
				first = i
			}
		}
		if first >= 0 {
			m := q.msgs[first]
			q.msgs = append(q.msgs[:first], q.msgs[first+1:]...)
			q.mu.Unlock()
			return m.Message, true
		}
		q.mu.Unlock()
		time.Sleep(time.Until(soonest))
	}
}

// peek returns the queued messages, visible or not.
func (q *testQueue) peek() []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queued(nil), q.msgs...)
}

type fixture struct {
	svc    *runs.Service
	engine *remediate.Engine
	client *simgraph.Client
	queue  *testQueue
	sim    *intunesim.Running
	tenant *intunesim.Tenant
	script string
}

// stores runs a test against the in-memory store and against Azure Tables
// served by Azurite.
func stores(t *testing.T, test func(t *testing.T, newStore func() runs.Store)) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		test(t, func() runs.Store { return runs.NewMemoryStore() })
	})
	t.Run("azure-tables", func(t *testing.T) {
		t.Parallel()
		conn := azurite.Start(t)
		test(t, func() runs.Store {
			st, _, err := azstore.Open(context.Background(), azstore.Config{ConnectionString: conn, Table: "runs", Queue: "work"})
			require.NoError(t, err)
			return st
		})
	})
}

func newFixture(t testing.TB, store runs.Store, devices int, simOpts intunesim.Options, opts runs.Options) *fixture {
	t.Helper()
	tenant := intunesim.Generate(7, intunesim.GenerateOptions{Devices: devices})
	if simOpts.WriteLimit == 0 {
		simOpts.WriteLimit, simOpts.ReadLimit, simOpts.Window = 1_000_000, 1_000_000, time.Second
		simOpts.TenantWriteLimit, simOpts.TenantReadLimit = 1_000_000, 1_000_000
	}
	sim, err := intunesim.Start(intunesim.New(tenant, simOpts), "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sim.Close() })
	gc := simgraph.New(sim.URL, 5*time.Second)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	eng := remediate.New(gc, pace.New(100_000, 100_000), remediate.Config{Concurrency: 16, Headroom: 50 * time.Millisecond,
		Retry: remediate.RetryPolicy{BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}}, log)
	q := &testQueue{}
	if opts.RecordMargin == 0 {
		opts.RecordMargin = 20 * time.Millisecond
	}
	if opts.ClaimLease == 0 {
		// Unsettled triggers (a call cut off under a loaded machine) wait
		// this long before they are looked at again.
		opts.ClaimLease = 500 * time.Millisecond
	}
	return &fixture{svc: runs.New(store, q, eng, opts, log), engine: eng, client: gc, queue: q, sim: sim, tenant: tenant,
		script: tenant.RemediationScript().ID}
}

// submit prepares a run of every eligible Windows device (a targets
// filter, resolved like a real request) and hands it to the queue.
func (f *fixture) submit(t testing.TB) (*remediate.Summary, []int) {
	t.Helper()
	req := remediate.Request{Targets: []remediate.Selector{{ScriptPolicyID: f.script, Filter: "operatingSystem eq 'Windows'"}}, Mode: "async"}
	plan, err := remediate.Validate(req, remediate.Limits{})
	require.NoError(t, err)
	return f.submitPlan(t, plan)
}

// submitN submits a run of exactly n eligible devices, listed.
func (f *fixture) submitN(t testing.TB, n int) (*remediate.Summary, []int) {
	t.Helper()
	plan := remediate.Plan{Mode: remediate.ModeAsync}
	for _, d := range f.eligibleDevices() {
		if len(plan.Items) < n {
			plan.Items = append(plan.Items, remediate.Item{Collection: intune.ManagedDevices, DeviceID: d.ID, ScriptPolicyID: f.script})
		}
	}
	require.Len(t, plan.Items, n)
	return f.submitPlan(t, plan)
}

func (f *fixture) submitPlan(t testing.TB, plan remediate.Plan) (*remediate.Summary, []int) {
	t.Helper()
	p, err := f.engine.Prepare(context.Background(), plan)
	require.NoError(t, err, "nothing rejects this run")
	s := p.Queue()
	var pending []int
	for i, d := range s.Devices {
		if d.Outcome == remediate.Pending {
			pending = append(pending, i)
		}
	}
	require.NoError(t, f.svc.Submit(context.Background(), s, "", ""))
	return s, pending
}

// drain delivers messages, each invocation under budget, until none is
// left; it returns the number of invocations.
func (f *fixture) drain(t testing.TB, budget time.Duration) int {
	t.Helper()
	n := 0
	for {
		m, ok := f.queue.pop()
		if !ok {
			return n
		}
		n++
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		err := f.svc.Work(ctx, m)
		cancel()
		require.NoError(t, err)
		require.Less(t, n, 100_000, "the run does not converge")
	}
}

// allPages reads every page of a finished run.
func (f *fixture) allPages(t testing.TB, id string, follow bool) ([]remediate.DeviceResult, runs.Status) {
	t.Helper()
	var devs []remediate.DeviceResult
	var first runs.Status
	for page := 0; ; page++ {
		st, err := f.svc.Status(context.Background(), id, "", page, follow)
		require.NoError(t, err)
		if page == 0 {
			first = st
		}
		devs = append(devs, st.Summary.Devices...)
		if page+1 >= st.PageCount {
			return devs, first
		}
	}
}

// exactlyOnce checks every device of the summary appears once and each
// succeeded device was triggered exactly once.
func (f *fixture) exactlyOnce(t testing.TB, s *remediate.Summary, devs []remediate.DeviceResult) {
	t.Helper()
	require.Len(t, devs, len(s.Devices))
	seen := map[string]bool{}
	for i, d := range devs {
		key := d.DeviceID + d.ScriptPolicyID
		require.False(t, seen[key], "device %s twice", d.DeviceID)
		seen[key] = true
		assert.Equal(t, s.Devices[i].DeviceID, d.DeviceID, "devices keep the summary's order")
		want := 0
		if d.Outcome == remediate.Succeeded {
			want = 1
		}
		if !assert.Equal(t, want, f.sim.TriggerCount(d.DeviceID, d.ScriptPolicyID), "device %s (%s/%s)", d.DeviceID, d.Outcome, d.Reason) {
			return
		}
	}
}

func TestAsyncRunCompletesExactlyOnce(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, newStore func() runs.Store) {
		store := newStore()
		_, memory := store.(*runs.MemoryStore)
		// Azurite keeps a table in LokiJS and scans the whole partition
		// for each query, so a 20,000-device partition takes it tens of
		// minutes (Azure Tables indexes partition and row keys): against
		// Azurite the same run is 2,000 devices.
		n, pageSize := 20_000, 2500
		if !memory {
			n, pageSize = 2000, 250
		}
		f := newFixture(t, store, 2*n, intunesim.Options{}, runs.Options{PageSize: pageSize})
		f.engine = remediate.New(f.client, pace.New(5000, 100_000), remediate.Config{Concurrency: 16, Headroom: 10 * time.Millisecond}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
		f.svc = runs.New(store, f.queue, f.engine, runs.Options{PageSize: pageSize, RecordMargin: 10 * time.Millisecond, ClaimLease: 300 * time.Millisecond},
			slog.New(slog.NewJSONHandler(io.Discard, nil)))
		s, pending := f.submitN(t, n)
		require.Len(t, pending, n)

		st, err := f.svc.Status(context.Background(), s.RunID, "", 0, false)
		require.NoError(t, err)
		assert.False(t, st.Done)
		assert.Equal(t, len(pending), st.Queued)
		assert.Equal(t, remediate.StatusRunning, st.Summary.Status)
		assert.GreaterOrEqual(t, st.RetryAfter, 5*time.Second)

		// Short invocations (100 devices' worth at the pace): chunks
		// continue across many of them. Azurite answers in milliseconds,
		// not microseconds, and slower still while the other packages'
		// tests load the machine, so its invocations are longer.
		budget := 60 * time.Millisecond
		if !memory {
			budget = 5 * time.Second
		}
		invocations := f.drain(t, budget)
		if memory {
			assert.Greater(t, invocations, n/200, "chunks were continued in new messages")
		} else {
			assert.GreaterOrEqual(t, invocations, n/200)
		}

		devs, st := f.allPages(t, s.RunID, false)
		require.True(t, st.Done)
		assert.Equal(t, 8, st.PageCount, "%d devices in pages of %d", n, pageSize)
		assert.Equal(t, len(s.Devices), st.Summary.Counts.Total)
		assert.Equal(t, len(pending), st.Summary.Counts.Succeeded)
		assert.Equal(t, remediate.StatusSucceeded, st.Summary.Status)
		f.exactlyOnce(t, s, devs)
		for _, d := range devs {
			if d.Outcome == remediate.Succeeded {
				assert.False(t, d.TriggeredAt.IsZero())
			}
		}
		_, err = f.svc.Status(context.Background(), s.RunID, "", st.PageCount, false)
		assert.ErrorIs(t, err, runs.ErrNoPage)
		_, err = f.svc.Status(context.Background(), "nosuchrun", "", 0, false)
		assert.ErrorIs(t, err, runs.ErrNotFound)
		_, err = f.svc.Status(context.Background(), s.RunID, "principal:someone-else", 0, false)
		assert.ErrorIs(t, err, runs.ErrNotFound, "another caller's run does not exist for them")
	})
}

// dyingStore fails every outcome save after the first few: the worker
// "dies" between sending triggers and recording them.
type dyingStore struct {
	runs.Store
	mu    sync.Mutex
	saves int
	after int
}

func (d *dyingStore) Save(ctx context.Context, id string, c *runs.Chunk, rows []runs.Row) error {
	d.mu.Lock()
	d.saves++
	n := d.saves
	d.mu.Unlock()
	if n > d.after && n%2 == 0 { // claims are odd saves, outcomes even
		return context.Canceled
	}
	return d.Store.Save(ctx, id, c, rows)
}

func TestKilledWorkerRedeliveredLosesAndRepeatsNothing(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, newStore func() runs.Store) {
		store := newStore()
		dying := &dyingStore{Store: store, after: 4}
		f := newFixture(t, dying, 600, intunesim.Options{}, runs.Options{ClaimLease: time.Nanosecond, SliceSize: 20})
		s, pending := f.submit(t)
		m, ok := f.queue.pop()
		require.True(t, ok)
		err := f.svc.Work(context.Background(), m)
		require.Error(t, err, "the worker died recording a slice")
		triggered := f.sim.Counters().Triggers
		require.Positive(t, triggered)

		// The host redelivers the message to a healthy worker.
		dying.after = 1 << 30
		require.NoError(t, f.queue.Send(context.Background(), m, 0))
		f.drain(t, time.Minute)

		devs, st := f.allPages(t, s.RunID, false)
		require.True(t, st.Done)
		assert.Equal(t, len(pending), st.Summary.Counts.Succeeded)
		f.exactlyOnce(t, s, devs)
		recovered := 0
		for _, d := range devs {
			if d.Message != "" && d.Outcome == remediate.Succeeded {
				recovered++
			}
		}
		assert.Equal(t, 20, recovered, "the slice whose outcomes were lost was recovered from Intune's action record, not triggered again")
	})
}

func TestHeldClaimsAreNotTriggeredTwice(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runs.NewMemoryStore(), 300, intunesim.Options{}, runs.Options{ClaimLease: time.Hour, SliceSize: 20})
	dying := &dyingStore{Store: runs.NewMemoryStore(), after: 0}
	f.svc = runs.New(dying, f.queue, f.engine, runs.Options{ClaimLease: time.Hour, SliceSize: 20}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	_, _ = f.submit(t)
	m, _ := f.queue.pop()
	require.Error(t, f.svc.Work(context.Background(), m))
	before := f.sim.Counters().Triggers
	// Redelivered while the claims are young (the first worker may still
	// be running): the claimed devices are held, not sent.
	dying.after = 1 << 30
	require.NoError(t, f.svc.Work(context.Background(), m))
	assert.Equal(t, before+len(m.Items)-20, f.sim.Counters().Triggers)
	var queued []queued
	for _, q := range f.queue.peek() {
		if q.Chunk == m.Chunk {
			queued = append(queued, q)
		}
	}
	require.Len(t, queued, 1, "held devices go back to the queue")
	assert.Len(t, queued[0].Items, 20)
	assert.WithinDuration(t, time.Now().Add(time.Hour), queued[0].visible, time.Minute, "once the claims' lease has passed")
}

func TestPoisonMessageFailsItsDevices(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, newStore func() runs.Store) {
		f := newFixture(t, newStore(), 500, intunesim.Options{}, runs.Options{ChunkSize: 50})
		s, pending := f.submit(t)
		poison, ok := f.queue.pop()
		require.True(t, ok)
		require.NoError(t, f.svc.Poison(context.Background(), poison))
		require.NoError(t, f.svc.Poison(context.Background(), poison), "a poison message seen twice changes nothing")
		f.drain(t, time.Minute)
		devs, st := f.allPages(t, s.RunID, false)
		require.True(t, st.Done)
		assert.Equal(t, len(poison.Items), st.Summary.Counts.Failed)
		assert.Equal(t, len(pending)-len(poison.Items), st.Summary.Counts.Succeeded)
		assert.Equal(t, remediate.StatusPartiallySucceeded, st.Summary.Status)
		f.exactlyOnce(t, s, devs)
		for _, it := range poison.Items {
			assert.Equal(t, remediate.ReasonPoison, devs[it.Index].Reason)
			assert.Equal(t, remediate.Failed, devs[it.Index].Outcome)
		}
	})
}

func TestFollowUpReportsScriptResults(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runs.NewMemoryStore(), 200, intunesim.Options{RunStateDelay: 300 * time.Millisecond}, runs.Options{FollowCache: 200 * time.Millisecond})
	s, _ := f.submit(t)
	f.drain(t, time.Minute)
	devs, _ := f.allPages(t, s.RunID, true)
	for _, d := range devs {
		if d.Outcome == remediate.Succeeded {
			require.NotNil(t, d.FollowUp)
			assert.Equal(t, remediate.FollowPending, d.FollowUp.State, "the scripts have not reported yet")
		} else {
			assert.Nil(t, d.FollowUp)
		}
	}
	time.Sleep(400 * time.Millisecond)
	devs, _ = f.allPages(t, s.RunID, true)
	states := map[string]int{}
	for _, d := range devs {
		if d.Outcome != remediate.Succeeded {
			continue
		}
		states[d.FollowUp.State]++
		// The simulator's outcomes carry the names remediator reports.
		assert.Equal(t, intunesim.FinalOutcome(d.DeviceID, d.ScriptPolicyID), d.FollowUp.State, d.DeviceID)
		assert.True(t, d.FollowUp.LastStateUpdateDateTime.After(d.TriggeredAt))
	}
	assert.Zero(t, states[remediate.FollowPending])
	assert.Greater(t, len(states), 2, "the simulator's outcomes vary: %v", states)
}

func TestUnanswerableClaimsEndAsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runs.NewMemoryStore(), 300, intunesim.Options{}, runs.Options{})
	dying := &dyingStore{Store: runs.NewMemoryStore(), after: 0}
	f.svc = runs.New(dying, f.queue, f.engine, runs.Options{ClaimLease: time.Nanosecond, SliceSize: 20, RecordMargin: 20 * time.Millisecond},
		slog.New(slog.NewJSONHandler(io.Discard, nil)))
	s, pending := f.submit(t)
	m, _ := f.queue.pop()
	require.Error(t, f.svc.Work(context.Background(), m), "the first slice was triggered, its outcomes lost")
	// Intune refuses to show these devices from now on.
	for _, it := range m.Items[:20] {
		f.sim.InjectFault(it.DeviceID, intunesim.Fault{Kind: intunesim.Fault500, Status: 403, Method: "GET"})
	}
	dying.after = 1 << 30
	require.NoError(t, f.queue.Send(context.Background(), m, 0))
	invocations := f.drain(t, time.Minute)
	assert.GreaterOrEqual(t, invocations, 10, "the devices were looked for once per lease, ten times")

	devs, st := f.allPages(t, s.RunID, false)
	require.True(t, st.Done, "the run ends")
	assert.Equal(t, 20, st.Summary.Counts.Failed)
	assert.Equal(t, len(pending)-20, st.Summary.Counts.Succeeded)
	for _, it := range m.Items[:20] {
		d := devs[it.Index]
		assert.Equal(t, remediate.ReasonOutcomeUnknown, d.Reason)
		assert.Contains(t, d.Message, "could not be read 10 times")
		assert.Equal(t, 1, f.sim.TriggerCount(d.DeviceID, d.ScriptPolicyID), "never sent again")
	}
}

// TestLongRetryAfterWaitsOnTheQueue: when Graph answers 429 with a
// Retry-After longer than the invocation has left (and longer than
// RETRY_AFTER_MAX, which caps it), the worker puts the rest of its chunk
// back with a visibility delay as long as the pause: one message, not a
// tight loop; the run reports the capped Retry-After.
func TestLongRetryAfterWaitsOnTheQueue(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runs.NewMemoryStore(), 300, intunesim.Options{}, runs.Options{})
	for _, d := range f.tenant.Windows(false) {
		f.sim.InjectFault(d.ID, intunesim.Fault{Kind: intunesim.FaultThrottle, Latency: 24 * time.Hour, Method: "POST"})
	}
	s, pending := f.submit(t)
	require.NotEmpty(t, pending)
	m, ok := f.queue.pop()
	require.True(t, ok)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.NoError(t, f.svc.Work(ctx, m))

	f.queue.mu.Lock()
	var later []time.Time
	for _, q := range f.queue.msgs {
		if q.Chunk == m.Chunk {
			later = append(later, q.visible)
		}
	}
	f.queue.mu.Unlock()
	require.Len(t, later, 1, "the rest of the chunk is one message")
	assert.Greater(t, time.Until(later[0]), 4*time.Minute, "visible when the (capped) pause ends")

	st, err := f.svc.Status(context.Background(), s.RunID, "", 0, false)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, st.Summary.Throttling.RetryAfterCapped, 1, "the day-long Retry-After is reported as capped")
}

// recordingCredentials records the tenants credentials were prepared for.
type recordingCredentials struct {
	mu      sync.Mutex
	tenants []string
}

func (r *recordingCredentials) Invalidate(context.Context, uint64) {}

func (r *recordingCredentials) Prepare(ctx context.Context, tenant string) (context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tenants = append(r.tenants, tenant)
	return ctx, nil
}

// TestFollowUpUsesTheRunsTenant: the scripts' results of a run in another
// tenant are read with that tenant's credential.
func TestFollowUpUsesTheRunsTenant(t *testing.T) {
	t.Parallel()
	const other = "22222222-2222-4222-8222-222222222222"
	creds := &recordingCredentials{}
	f := newFixture(t, runs.NewMemoryStore(), 100, intunesim.Options{}, runs.Options{})
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	f.engine = remediate.New(f.client, pace.New(100_000, 100_000), remediate.Config{Credentials: creds}, log)
	f.svc = runs.New(runs.NewMemoryStore(), f.queue, f.engine, runs.Options{}, log)
	plan, err := remediate.Validate(remediate.Request{Mode: "async", TenantID: other,
		ManagedDevices: []remediate.Target{{DeviceID: f.tenant.Windows(false)[0].ID, ScriptPolicyID: f.script}}}, remediate.Limits{})
	require.NoError(t, err)
	p, err := f.engine.Prepare(context.Background(), plan)
	require.NoError(t, err)
	s := p.Queue()
	require.NoError(t, f.svc.Submit(context.Background(), s, other, ""))
	creds.mu.Lock()
	assert.Equal(t, []string{other}, creds.tenants, "the run was prepared in its tenant")
	creds.tenants = nil
	creds.mu.Unlock()
	_, err = f.svc.Status(context.Background(), s.RunID, "", 0, true)
	require.NoError(t, err)
	creds.mu.Lock()
	defer creds.mu.Unlock()
	assert.Equal(t, []string{other}, creds.tenants)
}

// TestRunsInterleave: a run keeps only a few chunks on the queue and
// queues the next as one finishes, so a small run submitted behind a big
// one is done after a few of the big run's chunks, not after all of them,
// and the big run still completes exactly once.
func TestRunsInterleave(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runs.NewMemoryStore(), 600, intunesim.Options{}, runs.Options{})
	f.queue.fifo = true
	f.svc = runs.New(runs.NewMemoryStore(), f.queue, f.engine, runs.Options{ChunkSize: 20, QueuedChunks: 2, RecordMargin: 20 * time.Millisecond},
		slog.New(slog.NewJSONHandler(io.Discard, nil)))
	eligible := f.eligibleDevices()
	require.GreaterOrEqual(t, len(eligible), 201)
	submit := func(devs []intunesim.Device) string {
		var items []remediate.Target
		for _, d := range devs {
			items = append(items, remediate.Target{DeviceID: d.ID, ScriptPolicyID: f.script})
		}
		plan, err := remediate.Validate(remediate.Request{Mode: "async", ManagedDevices: items}, remediate.Limits{})
		require.NoError(t, err)
		p, err := f.engine.Prepare(context.Background(), plan)
		require.NoError(t, err)
		s := p.Queue()
		require.NoError(t, f.svc.Submit(context.Background(), s, "", ""))
		return s.RunID
	}
	big := submit(eligible[:200]) // ten chunks
	assert.Len(t, f.queue.peek(), 2, "two chunks on the queue, not ten")
	small := submit(eligible[200:201])

	bigChunksBefore := 0
	smallDone := false
	for {
		m, ok := f.queue.pop()
		if !ok {
			break
		}
		require.NoError(t, f.svc.Work(context.Background(), m))
		if m.RunID == big && !smallDone {
			bigChunksBefore++
		}
		if m.RunID == small {
			smallDone = true
		}
	}
	assert.True(t, smallDone)
	assert.LessOrEqual(t, bigChunksBefore, 2, "the small run waited for two of the big run's ten chunks")
	st, err := f.svc.Status(context.Background(), big, "", 0, false)
	require.NoError(t, err)
	assert.True(t, st.Done)
	assert.Equal(t, 200, st.Summary.Counts.Succeeded)
	for _, d := range eligible[:201] {
		assert.Equal(t, 1, f.sim.TriggerCount(d.ID, f.script), "every device exactly once")
	}
}

// eligibleDevices are the tenant's Windows devices a remediation can run
// on.
func (f *fixture) eligibleDevices() []intunesim.Device {
	var out []intunesim.Device
	for _, d := range f.tenant.Windows(false) {
		if !d.CoManaged && d.JoinType != "azureADRegistered" {
			out = append(out, d)
		}
	}
	return out
}

// TestWorkersTriggerTheStoredRun: a worker triggers the devices and
// scripts the stored run holds for its chunk, whatever the queue message
// says (anyone who can write to the queue could name any device and
// script), and re-checks the allowlist as configured when it works.
func TestWorkersTriggerTheStoredRun(t *testing.T) {
	t.Parallel()
	stores(t, func(t *testing.T, newStore func() runs.Store) {
		store := newStore()
		f := newFixture(t, store, 400, intunesim.Options{}, runs.Options{ChunkSize: 50})
		s, pending := f.submitN(t, 100)
		outside := f.eligibleDevices()[150].ID
		msg, ok := f.queue.pop()
		require.True(t, ok)
		tampered := msg
		tampered.Items = append([]runs.WorkItem(nil), msg.Items...)
		tampered.Items[0].DeviceID = outside
		tampered.Items[1].ScriptID = "11111111-2222-4333-8444-555555555555"
		other := 50
		if msg.Chunk == 1 {
			other = 0
		}
		tampered.Items = append(tampered.Items, runs.WorkItem{Index: other, DeviceID: outside, ScriptID: f.script, Collection: "managedDevices"})
		require.NoError(t, f.svc.Work(context.Background(), tampered))
		assert.Zero(t, f.sim.TriggerCount(outside, f.script), "a device the run does not hold is never triggered")
		assert.Equal(t, 50, f.sim.Counters().Triggers, "the chunk's own 50 devices, nothing else")

		// The deployment drops the script from its allowlist before the
		// other chunk is worked: its devices are not triggered.
		log := slog.New(slog.NewJSONHandler(io.Discard, nil))
		strict := remediate.New(f.client, pace.New(100_000, 100_000), remediate.Config{AllowedScripts: map[string]bool{"11111111-2222-4333-8444-555555555555": true}}, log)
		svc := runs.New(store, f.queue, strict, runs.Options{ChunkSize: 50, ClaimLease: 500 * time.Millisecond}, log)
		for {
			m, ok := f.queue.pop()
			if !ok {
				break
			}
			require.NoError(t, svc.Work(context.Background(), m))
		}
		assert.Equal(t, 50, f.sim.Counters().Triggers)
		devs, st := f.allPages(t, s.RunID, false)
		require.True(t, st.Done)
		assert.Equal(t, 50, st.Summary.Counts.Succeeded)
		assert.Equal(t, 50, st.Summary.Counts.NotAttempted)
		refused := 0
		for _, i := range pending {
			if devs[i].Reason == remediate.ReasonScriptRefused {
				refused++
				assert.Contains(t, devs[i].Message, "no longer on this deployment's allowlist")
			}
		}
		assert.Equal(t, 50, refused)
		f.exactlyOnce(t, s, devs)
	})
}

// TestFollowUpIsReadOncePerPeriod: a flow polling follow=true 50 times in a
// row makes Intune's run states be read once per FOLLOW_CACHE period, not
// once per poll, and every poll gets the same results.
func TestFollowUpIsReadOncePerPeriod(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runs.NewMemoryStore(), 300, intunesim.Options{}, runs.Options{FollowCache: time.Hour})
	s, _ := f.submitN(t, 40)
	f.drain(t, time.Minute)
	statesReads := func() int {
		n := 0
		for _, r := range f.sim.Records() {
			if strings.Contains(r.Path, "deviceRunStates") {
				n++
			}
		}
		return n
	}
	first, err := f.svc.Status(context.Background(), s.RunID, "", 0, true)
	require.NoError(t, err)
	reads := statesReads()
	require.Positive(t, reads)
	for range 49 {
		st, err := f.svc.Status(context.Background(), s.RunID, "", 0, true)
		require.NoError(t, err)
		for i, d := range st.Summary.Devices {
			assert.Equal(t, first.Summary.Devices[i].FollowUp, d.FollowUp)
		}
	}
	assert.Equal(t, reads, statesReads(), "49 more polls, no more reads")
	other, err := f.svc.Status(context.Background(), s.RunID, "someone-else", 0, true)
	assert.ErrorIs(t, err, runs.ErrNotFound, "the cache answers no other caller: %v", other.Summary)
}

// togetherStore holds the first two chunk listings until both are read,
// so two workers finishing their chunks at once see the same chunks.
type togetherStore struct {
	runs.Store
	together atomic.Bool
	mu       sync.Mutex
	arrived  int
	both     chan struct{}
}

func (s *togetherStore) Chunks(ctx context.Context, id string) ([]runs.Chunk, error) {
	c, err := s.Store.Chunks(ctx, id)
	if s.together.Load() {
		s.mu.Lock()
		if s.arrived++; s.arrived == 2 {
			close(s.both)
		}
		s.mu.Unlock()
		select {
		case <-s.both:
		case <-time.After(5 * time.Second):
		}
	}
	return c, err
}

// TestChunksFinishingTogetherQueueTheNextOnce: two workers that finish
// their chunks at the same moment both find the next chunks unqueued;
// each chunk is still queued once (a second message would have two
// invocations work one chunk, and one of them lose its recording).
func TestChunksFinishingTogetherQueueTheNextOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runs.NewMemoryStore(), 600, intunesim.Options{}, runs.Options{})
	store := &togetherStore{Store: runs.NewMemoryStore(), both: make(chan struct{})}
	f.svc = runs.New(store, f.queue, f.engine, runs.Options{ChunkSize: 20, QueuedChunks: 2, RecordMargin: 20 * time.Millisecond},
		slog.New(slog.NewJSONHandler(io.Discard, nil)))
	var items []remediate.Target
	for _, d := range f.eligibleDevices()[:200] {
		items = append(items, remediate.Target{DeviceID: d.ID, ScriptPolicyID: f.script})
	}
	plan, err := remediate.Validate(remediate.Request{Mode: "async", ManagedDevices: items}, remediate.Limits{})
	require.NoError(t, err)
	p, err := f.engine.Prepare(context.Background(), plan)
	require.NoError(t, err)
	require.NoError(t, f.svc.Submit(context.Background(), p.Queue(), "", ""))
	first, ok := f.queue.pop()
	require.True(t, ok)
	second, ok := f.queue.pop()
	require.True(t, ok)
	store.together.Store(true)
	var wg sync.WaitGroup
	for _, m := range []runs.Message{first, second} {
		wg.Go(func() { assert.NoError(t, f.svc.Work(context.Background(), m)) })
	}
	wg.Wait()
	chunks := map[int]int{}
	for _, m := range f.queue.peek() {
		chunks[m.Chunk]++
	}
	assert.Equal(t, map[int]int{2: 1, 3: 1}, chunks, "the next two chunks, each once")
}
