package azstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"golang.org/x/sync/errgroup"

	"github.com/remediator/remediator/internal/runs"
)

// Store is the run table. A run is one partition: its meta row, one row per
// chunk and one per device, keyed so that a page of devices is one range
// query.
type Store struct {
	table     *aztables.Client
	tableName string
	queues    []*azqueue.QueueClient // the work queue and its poison queue, for Ensure
	ops       atomic.Int64
	// ready is set once Ensure has made the table and queues: until then
	// every call fails at once with ErrNotReady instead of waiting on the
	// storage client's retries.
	ready atomic.Bool
}

// ErrNotReady is the error of every call before storage has answered.
var ErrNotReady = errors.New("azstore: run storage has not answered yet")

func (s *Store) check() error {
	if !s.ready.Load() {
		return ErrNotReady
	}
	return nil
}

var _ runs.Store = (*Store)(nil)

// Ops is the number of storage operations (requests) so far.
func (s *Store) Ops() int64 { return s.ops.Load() }

const (
	metaKey = "meta"
	// propChunk is the most bytes of JSON a string property holds: at
	// most as many UTF-16 units, under the 32 K a property may hold.
	propChunk = 30000
)

func chunkKey(n int) string  { return fmt.Sprintf("c%06d", n) }
func deviceKey(i int) string { return fmt.Sprintf("d%08d", i) }

// entity is a row as the table sees it: keys and the value as JSON, split
// over properties J0, J1... when long, checked against the table's limits.
func entity(pk, rk string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	props := map[string]any{}
	for i, part := range splitString(string(b), propChunk) {
		props[fmt.Sprintf("J%d", i)] = part
	}
	return checkEntity(pk, rk, props)
}

// value decodes an entity's JSON into v and returns its ETag.
func value(raw []byte, v any) (string, error) {
	var e aztables.EDMEntity
	if err := json.Unmarshal(raw, &e); err != nil {
		return "", err
	}
	var sb strings.Builder
	for i := 0; ; i++ {
		p, ok := e.Properties[fmt.Sprintf("J%d", i)].(string)
		if !ok {
			break
		}
		sb.WriteString(p)
	}
	return e.ETag, json.Unmarshal([]byte(sb.String()), v)
}

// CreateRun implements runs.Store: the device rows in transactions of 100,
// then the chunks, then the meta row last, so a run that is readable is
// complete.
func (s *Store) CreateRun(ctx context.Context, m runs.Meta, rows []runs.Row, chunks []runs.Chunk) error {
	if err := s.check(); err != nil {
		return err
	}
	var ents [][]byte
	for _, r := range rows {
		e, err := entity(m.RunID, deviceKey(r.Index), r)
		if err != nil {
			return err
		}
		ents = append(ents, e)
	}
	for _, c := range chunks {
		e, err := entity(m.RunID, chunkKey(c.Number), c)
		if err != nil {
			return err
		}
		ents = append(ents, e)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for start := 0; start < len(ents); start += 100 {
		batch := ents[start:min(start+100, len(ents))]
		g.Go(func() error { return s.transact(gctx, batch, aztables.TransactionTypeInsertReplace, nil) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	e, err := entity(m.RunID, metaKey, m)
	if err != nil {
		return err
	}
	s.ops.Add(1)
	if _, err = s.table.UpsertEntity(ctx, e, nil); err != nil {
		return err
	}
	// The run's entry in the index of its creation day, for retention.
	idx, err := json.Marshal(aztables.Entity{PartitionKey: runIndexPartition(m.Created), RowKey: runIndexKey(m.Created, m.RunID)})
	if err != nil {
		return err
	}
	s.ops.Add(1)
	_, err = s.table.UpsertEntity(ctx, idx, nil)
	return err
}

func (s *Store) transact(ctx context.Context, ents [][]byte, kind aztables.TransactionType, first *azcore.ETag) error {
	acts := make([]aztables.TransactionAction, len(ents))
	for i, e := range ents {
		acts[i] = aztables.TransactionAction{ActionType: kind, Entity: e}
	}
	if first != nil {
		acts[0].ActionType, acts[0].IfMatch = aztables.TransactionTypeUpdateReplace, first
	}
	s.ops.Add(1)
	_, err := s.table.SubmitTransaction(ctx, acts, nil)
	return err
}

// Meta implements runs.Store.
func (s *Store) Meta(ctx context.Context, id string) (runs.Meta, error) {
	var m runs.Meta
	if err := s.check(); err != nil {
		return m, err
	}
	_, err := s.get(ctx, id, metaKey, &m)
	return m, err
}

// Update implements runs.Store: the run's header is rewritten if it is
// still the one read (an optimistic write, tried again when another
// changed it).
func (s *Store) Update(ctx context.Context, id string, change func(*runs.Meta) bool) (runs.Meta, error) {
	if err := s.check(); err != nil {
		return runs.Meta{}, err
	}
	for range claimAttempts {
		var m runs.Meta
		etag, err := s.get(ctx, id, metaKey, &m)
		if err != nil || !change(&m) {
			return m, err
		}
		e, err := entity(id, metaKey, m)
		if err != nil {
			return runs.Meta{}, err
		}
		tag := azcore.ETag(etag)
		s.ops.Add(1)
		_, err = s.table.UpdateEntity(ctx, e, &aztables.UpdateEntityOptions{IfMatch: &tag, UpdateMode: aztables.UpdateModeReplace})
		if !hasCode(err, http.StatusPreconditionFailed) {
			return m, err
		}
	}
	return runs.Meta{}, errors.New("azstore: the run's header stayed contended")
}

func (s *Store) get(ctx context.Context, pk, rk string, v any) (string, error) {
	if !validKey(pk) {
		return "", runs.ErrNotFound
	}
	s.ops.Add(1)
	resp, err := s.table.GetEntity(ctx, pk, rk, nil)
	if hasCode(err, http.StatusNotFound) {
		return "", runs.ErrNotFound
	}
	if err != nil {
		return "", err
	}
	etag, err := value(resp.Value, v)
	return etag, err
}

// validKey keeps characters Azure Tables forbids in keys (and OData
// quoting) out of lookups by caller-supplied ids.
func validKey(k string) bool {
	return k != "" && len(k) <= 128 && !strings.ContainsAny(k, "/\\#?'\t\n\r")
}

// Chunk implements runs.Store.
func (s *Store) Chunk(ctx context.Context, id string, n int) (runs.Chunk, error) {
	if err := s.check(); err != nil {
		return runs.Chunk{}, err
	}
	var c runs.Chunk
	etag, err := s.get(ctx, id, chunkKey(n), &c)
	if err != nil {
		return runs.Chunk{}, err
	}
	c.Version = etag
	return c, nil
}

// Chunks implements runs.Store.
func (s *Store) Chunks(ctx context.Context, id string) ([]runs.Chunk, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var out []runs.Chunk
	err := s.query(ctx, id, chunkKey(0), "d", func(raw []byte) error {
		var c runs.Chunk
		etag, err := value(raw, &c)
		c.Version = etag
		out = append(out, c)
		return err
	})
	return out, err
}

// Rows implements runs.Store.
func (s *Store) Rows(ctx context.Context, id string, from, to int) ([]runs.Row, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var out []runs.Row
	err := s.query(ctx, id, deviceKey(from), deviceKey(to), func(raw []byte) error {
		var r runs.Row
		_, err := value(raw, &r)
		out = append(out, r)
		return err
	})
	slices.SortFunc(out, func(a, b runs.Row) int { return a.Index - b.Index })
	return out, err
}

// query reads the partition's rows with from <= RowKey < to.
func (s *Store) query(ctx context.Context, pk, from, to string, each func([]byte) error) error {
	if !validKey(pk) {
		return runs.ErrNotFound
	}
	filter := fmt.Sprintf("PartitionKey eq '%s' and RowKey ge '%s' and RowKey lt '%s'", pk, from, to)
	pager := s.table.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	for pager.More() {
		s.ops.Add(1)
		page, err := pager.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, raw := range page.Entities {
			if err := each(raw); err != nil {
				return err
			}
		}
	}
	return nil
}

// Save implements runs.Store: one transaction that replaces the chunk row
// only if its ETag is unchanged, and upserts the rows.
func (s *Store) Save(ctx context.Context, id string, c *runs.Chunk, rows []runs.Row) error {
	if err := s.check(); err != nil {
		return err
	}
	if len(rows) > 99 {
		return fmt.Errorf("azstore: %d rows in one save, at most 99", len(rows))
	}
	ce, err := entity(id, chunkKey(c.Number), *c)
	if err != nil {
		return err
	}
	ents := [][]byte{ce}
	for _, r := range rows {
		e, err := entity(id, deviceKey(r.Index), r)
		if err != nil {
			return err
		}
		ents = append(ents, e)
	}
	etag := azcore.ETag(c.Version)
	if err := s.transact(ctx, ents, aztables.TransactionTypeInsertReplace, &etag); err != nil {
		// A failed transaction changes nothing; whether it failed on the
		// ETag is read back rather than parsed from a multipart error.
		if now, gerr := s.Chunk(ctx, id, c.Number); gerr == nil && now.Version != c.Version {
			return runs.ErrConflict
		}
		return err
	}
	now, err := s.Chunk(ctx, id, c.Number)
	if err != nil {
		return fmt.Errorf("azstore: reading chunk %d back: %w", c.Number, err)
	}
	c.Version = now.Version
	return nil
}
