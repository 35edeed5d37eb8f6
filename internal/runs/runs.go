// Package runs carries remediation runs beyond one invocation: a run too
// long to answer synchronously is written to a Store and cut into chunks of
// at most 200 devices that a Queue hands to workers (in Azure, a queue
// trigger). Workers record every device's outcome as they go, so a killed
// worker loses nothing and a redelivered chunk re-triggers no device the run
// already triggered. Status reads the run back, page by page, and can
// follow the devices' scripts to their results.
package runs

import (
	"context"
	"errors"
	"time"

	"github.com/remediator/remediator/internal/remediate"
)

// MaxChunk is the most work items one queue message carries (a message of
// 200 items is ~25 KB, under the queue's 64 KB).
const MaxChunk = 200

// ErrNotFound is returned by a Store for an unknown run.
var ErrNotFound = errors.New("runs: no such run")

// ErrConflict is returned by Store.Save when the chunk changed since it was
// read: another worker holds it.
var ErrConflict = errors.New("runs: the chunk was changed by another worker")

// Meta is a run's header.
type Meta struct {
	RunID    string
	TenantID string
	// Caller is who submitted the run ("" for the shared function-key
	// caller): only they can read it.
	Caller  string
	Created time.Time
	// Devices is the number of devices in the summary.
	Devices int
	// Base counts the devices that were final before any worker ran
	// (skipped, not found...).
	Base remediate.Counts
	// Summary is the run's summary without devices, as JSON.
	Summary []byte
	// Cancelled is when its caller cancelled the run (zero: not
	// cancelled): devices not yet triggered end not_attempted, reason
	// cancelled.
	Cancelled time.Time `json:",omitzero"`
	// Rollout is how far a run in waves got; nil for a run without.
	Rollout *Rollout `json:",omitempty"`
}

// Rollout is a run's waves as they go: the waves, their gates' readings
// and decisions, the wave under way (Status.Current) and why it halted.
type Rollout struct {
	Status remediate.RolloutStatus
	// First is the index of the run's first device to trigger (the
	// devices before it were final at submission); wave k covers the
	// devices First+Status.Waves[k-2].Devices to First+Status.Waves[k-1].Devices.
	First int
	// WaveDone is when the wave under way had its last device done: its
	// gate's wait counts from it. Zero while the wave triggers.
	WaveDone time.Time `json:",omitzero"`
}

// Row is one device's line of a run.
type Row struct {
	Index int
	remediate.DeviceResult
	// ClaimedAt is set just before the trigger is sent and cleared when a
	// trigger was not sent after all; a row claimed without an outcome
	// belongs to a worker that stopped mid-call.
	ClaimedAt time.Time
	// Checks counts the times Intune's action record could not tell
	// whether a claimed device's trigger took effect.
	Checks int
}

// final reports whether the row has its outcome.
func (r Row) final() bool {
	return r.Outcome != remediate.Pending
}

// Chunk is the progress of one chunk: Open devices still to do, and the
// counts of those done. Version changes with every Save (optimistic
// concurrency between workers).
type Chunk struct {
	Number   int
	Open     int
	Counts   remediate.Counts
	Throttle remediate.Throttling
	Finished time.Time
	// Items are the indexes of the chunk's devices; Queued is set once its
	// message is on the queue (a run keeps only a few chunks queued, so
	// that runs submitted later interleave with it).
	Items  []int `json:",omitempty"`
	Queued bool  `json:",omitempty"`
	// Wave is the rollout wave (1-based) the chunk's devices belong to; 0
	// for a run without waves.
	Wave    int    `json:",omitempty"`
	Version string `json:"-"` // the store's, not part of the row
}

// Store keeps runs. Implementations: MemoryStore here, Azure Tables in
// package azstore.
type Store interface {
	CreateRun(ctx context.Context, m Meta, rows []Row, chunks []Chunk) error
	Meta(ctx context.Context, runID string) (Meta, error)
	Chunks(ctx context.Context, runID string) ([]Chunk, error)
	Chunk(ctx context.Context, runID string, n int) (Chunk, error)
	// Rows returns the rows with from <= Index < to, in order.
	Rows(ctx context.Context, runID string, from, to int) ([]Row, error)
	// Save writes rows (at most 99) and chunk together, if chunk.Version
	// is still the stored one (else ErrConflict), and sets chunk.Version
	// to the new one.
	Save(ctx context.Context, runID string, chunk *Chunk, rows []Row) error
	// Update changes the run's header with change, written only if no
	// other write came between its read and its write (tried again then);
	// change reports false to write nothing. It returns the header as
	// stored.
	Update(ctx context.Context, runID string, change func(*Meta) bool) (Meta, error)
}

// Queue sends chunks to workers; after delays the message becomes visible
// that much later.
type Queue interface {
	Send(ctx context.Context, m Message, after time.Duration) error
}

// Retention says what a cleanup deletes: finished runs created before
// RunsBefore, unfinished ones created before UnfinishedBefore,
// idempotency keys expired before Now, cooldown rows older than
// CooldownBefore, within MaxOps storage operations.
type Retention struct {
	RunsBefore, UnfinishedBefore, CooldownBefore, Now time.Time
	MaxOps                                            int
}

// Cleaned is what a cleanup deleted; Done is false when work is left.
type Cleaned struct {
	Runs, Keys, Cooldowns int
	Done                  bool
}

// Cleaner deletes what has outlived its retention; the Azure Tables store
// implements it.
type Cleaner interface {
	Cleanup(ctx context.Context, p Retention) (Cleaned, error)
}
