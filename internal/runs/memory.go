package runs

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
)

// MemoryStore is a process-local Store for `make demo` and local runs:
// runs are lost with the process, so the Azure adapter refuses it under
// the real host. Ops counts the requests Azure Tables would have served for
// the same calls (transactions of 100, pages of 1,000, a read-back after
// each save), so benchmarks can report storage operations per device.
type MemoryStore struct {
	mu   sync.Mutex
	runs map[string]*memRun
	ops  int64
}

type memRun struct {
	meta    Meta
	rows    []Row
	chunks  []Chunk
	version int
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{runs: map[string]*memRun{}} }

// CreateRun implements Store.
func (s *MemoryStore) CreateRun(_ context.Context, m Meta, rows []Row, chunks []Chunk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops += int64((len(rows)+len(chunks)+99)/100) + 1
	r := &memRun{meta: m, rows: append([]Row(nil), rows...), chunks: append([]Chunk(nil), chunks...)}
	for i := range r.chunks {
		r.chunks[i].Version = "0"
	}
	s.runs[m.RunID] = r
	return nil
}

func (s *MemoryStore) run(id string) (*memRun, error) {
	s.ops++
	r, ok := s.runs[id]
	if !ok {
		return nil, ErrNotFound
	}
	return r, nil
}

// Meta implements Store.
func (s *MemoryStore) Meta(_ context.Context, id string) (Meta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.run(id)
	if err != nil {
		return Meta{}, err
	}
	return r.meta, nil
}

// Chunks implements Store.
func (s *MemoryStore) Chunks(_ context.Context, id string) ([]Chunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.run(id)
	if err != nil {
		return nil, err
	}
	s.ops += int64(len(r.chunks) / 1000)
	return append([]Chunk(nil), r.chunks...), nil
}

// Chunk implements Store.
func (s *MemoryStore) Chunk(_ context.Context, id string, n int) (Chunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.run(id)
	if err != nil {
		return Chunk{}, err
	}
	if n < 0 || n >= len(r.chunks) {
		return Chunk{}, ErrNotFound
	}
	return r.chunks[n], nil
}

// Rows implements Store.
func (s *MemoryStore) Rows(_ context.Context, id string, from, to int) ([]Row, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.run(id)
	if err != nil {
		return nil, err
	}
	from, to = max(from, 0), min(to, len(r.rows))
	if from >= to {
		return nil, nil
	}
	s.ops += int64((to - from - 1) / 1000)
	return append([]Row(nil), r.rows[from:to]...), nil
}

// Save implements Store.
func (s *MemoryStore) Save(_ context.Context, id string, c *Chunk, rows []Row) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.run(id)
	if err != nil {
		return err
	}
	if c.Number < 0 || c.Number >= len(r.chunks) {
		return ErrNotFound
	}
	if r.chunks[c.Number].Version != c.Version {
		return ErrConflict
	}
	for _, row := range rows {
		r.rows[row.Index] = row
	}
	s.ops++ // the read-back of the chunk's new ETag
	r.version++
	c.Version = strconv.Itoa(r.version)
	r.chunks[c.Number] = *c
	return nil
}

// Ops is the number of store operations so far.
func (s *MemoryStore) Ops() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ops
}

// MemoryQueue is an in-process Queue: every message is worked in this
// process, retried with backoff on error and accounted as poison after
// MaxDeliveries, like the Azure queue trigger does.
type MemoryQueue struct {
	// MaxDeliveries mirrors host.json maxDequeueCount. Default 5.
	MaxDeliveries int
	// Timeout bounds one delivery, like functionTimeout. Default 5 min.
	Timeout time.Duration

	ctx context.Context
	svc *Service
	log *slog.Logger
	sem chan struct{}
	wg  sync.WaitGroup
}

// NewMemoryQueue returns a queue whose messages are worked by up to
// workers goroutines once Start is called.
func NewMemoryQueue(workers int, log *slog.Logger) *MemoryQueue {
	return &MemoryQueue{MaxDeliveries: 5, Timeout: 5 * time.Minute, log: log, sem: make(chan struct{}, max(1, workers))}
}

// Start begins working messages with svc until ctx ends.
func (q *MemoryQueue) Start(ctx context.Context, svc *Service) {
	q.ctx, q.svc = ctx, svc
}

// Send implements Queue.
func (q *MemoryQueue) Send(_ context.Context, m Message, after time.Duration) error {
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		if pace.Sleep(q.ctx, after) != nil {
			return
		}
		for delivery := 1; ; delivery++ {
			select {
			case q.sem <- struct{}{}:
			case <-q.ctx.Done():
				return
			}
			ctx, cancel := context.WithTimeout(q.ctx, q.Timeout)
			err := q.svc.Work(ctx, m)
			cancel()
			<-q.sem
			if err == nil {
				return
			}
			q.log.Warn("work failed", "run_id", m.RunID, "chunk", m.Chunk, "delivery", delivery, "error", err.Error())
			if delivery >= q.MaxDeliveries {
				if err := q.svc.Poison(context.WithoutCancel(q.ctx), m); err != nil {
					q.log.Error("poison message could not be recorded", "run_id", m.RunID, "chunk", m.Chunk, "error", err.Error())
				}
				return
			}
			if pace.Sleep(q.ctx, time.Duration(delivery)*time.Second) != nil {
				return
			}
		}
	}()
	return nil
}

// Wait blocks until every message sent so far, and every message those
// sent in turn, has been worked or the queue's context ended.
func (q *MemoryQueue) Wait() { q.wg.Wait() }

// Update implements Store.
func (s *MemoryStore) Update(_ context.Context, id string, change func(*Meta) bool) (Meta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.run(id)
	if err != nil {
		return Meta{}, err
	}
	m := r.meta
	if m.Rollout != nil {
		ro := *m.Rollout
		ro.Status.Waves = append([]remediate.WaveStatus(nil), ro.Status.Waves...)
		m.Rollout = &ro
	}
	if change(&m) {
		s.ops++
		r.meta = m
	}
	return m, nil
}
