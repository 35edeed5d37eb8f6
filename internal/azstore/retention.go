package azstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/remediator/remediator/internal/runs"
)

// Runs are indexed by the day they were created, one partition per day,
// each row keyed by the creation time and the run id, so that expired
// runs are found with a range query instead of a scan of the table.
const runIndexPrefix = "runs-by-day-"

func runIndexPartition(t time.Time) string { return runIndexPrefix + t.UTC().Format("20060102") }

// indexTime is a sortable creation time for an index row's key.
func indexTime(t time.Time) string { return t.UTC().Format("20060102T150405.000000000Z") }

// runIndexKey is a run's index row key: its creation time, then its id.
func runIndexKey(created time.Time, id string) string { return indexTime(created) + "_" + id }

// budget counts the storage operations a cleanup may still make; short is
// set when an operation was wanted beyond it.
type budget struct {
	left  int
	short bool
}

func (b *budget) take() bool {
	if b.left <= 0 {
		b.short = true
		return false
	}
	b.left--
	return true
}

// Cleanup implements runs.Cleaner: it deletes runs created before
// p.RunsBefore (all their rows), idempotency keys that expired before
// p.Now, and cooldown rows older than p.CooldownBefore, making at most
// p.MaxOps storage operations (at least six); Done is false when work is
// left for the next call.
func (s *Store) Cleanup(ctx context.Context, p runs.Retention) (runs.Cleaned, error) {
	if err := s.check(); err != nil {
		return runs.Cleaned{}, err
	}
	// Each kind gets its share of the budget, so that none starves behind
	// another: a quarter each for keys and cooldowns (two operations at
	// least), the rest for runs.
	share := max(2, p.MaxOps/4)
	runsB, keysB, coolB := &budget{left: max(2, p.MaxOps-2*share)}, &budget{left: share}, &budget{left: share}
	var c runs.Cleaned
	var err error
	if c.Runs, err = s.cleanRuns(ctx, p.RunsBefore, p.UnfinishedBefore, runsB); err != nil {
		return c, err
	}
	// A key's expiry is inside its JSON value: the partition is read page
	// by page (within the budget) and expired keys deleted.
	filter := fmt.Sprintf("PartitionKey eq '%s'", keysPartition)
	if c.Keys, err = s.deleteWhere(ctx, filter, keysB, func(raw []byte) bool {
		var row keyRow
		_, err := value(raw, &row)
		return err == nil && row.Expires.Before(p.Now)
	}); err != nil {
		return c, err
	}
	filter = fmt.Sprintf("PartitionKey ge 'cooldown-' and PartitionKey lt 'cooldown.' and At lt datetime'%s'", p.CooldownBefore.UTC().Format(time.RFC3339))
	if c.Cooldowns, err = s.deleteWhere(ctx, filter, coolB, nil); err != nil {
		return c, err
	}
	c.Done = !runsB.short && !keysB.short && !coolB.short
	return c, nil
}

// cleanRuns deletes the runs of the index days before before that are
// finished, or were created before unfinishedBefore: a run still being
// worked is never taken from under its workers.
func (s *Store) cleanRuns(ctx context.Context, before, unfinishedBefore time.Time, b *budget) (int, error) {
	day := runIndexPartition(before)
	filter := fmt.Sprintf("(PartitionKey ge '%s' and PartitionKey lt '%s') or (PartitionKey eq '%s' and RowKey lt '%s')",
		runIndexPrefix, day, day, indexTime(before))
	sel := "PartitionKey,RowKey"
	top := int32(100)
	deleted := 0
	err := s.listed(ctx, &aztables.ListEntitiesOptions{Filter: &filter, Select: &sel, Top: &top}, b, func(entities [][]byte) error {
		for _, raw := range entities {
			var e aztables.Entity
			if err := json.Unmarshal(raw, &e); err != nil {
				return err
			}
			created, id, _ := strings.Cut(e.RowKey, "_")
			if !validKey(id) {
				continue
			}
			if created >= indexTime(unfinishedBefore) {
				if !b.take() {
					return nil
				}
				live, err := s.live(ctx, id)
				if err != nil {
					return err
				}
				if live {
					continue
				}
			}
			if _, err := s.deleteWhere(ctx, fmt.Sprintf("PartitionKey eq '%s'", id), b, nil); err != nil || b.short {
				return err
			}
			if !b.take() {
				return nil
			}
			s.ops.Add(1)
			if _, err := s.table.DeleteEntity(ctx, e.PartitionKey, e.RowKey, nil); err != nil && !hasCode(err, 404) {
				return err
			}
			deleted++
		}
		return nil
	})
	return deleted, err
}

// live reports whether run id has a chunk not finished (one query).
func (s *Store) live(ctx context.Context, id string) (bool, error) {
	chunks, err := s.Chunks(ctx, id)
	if errors.Is(err, runs.ErrNotFound) {
		return false, nil
	}
	for _, c := range chunks {
		if c.Open > 0 {
			return true, err
		}
	}
	return false, err
}

// listed hands each page of a listing to each, within the budget (one
// storage operation a page).
func (s *Store) listed(ctx context.Context, opts *aztables.ListEntitiesOptions, b *budget, each func([][]byte) error) error {
	pager := s.table.NewListEntitiesPager(opts)
	for pager.More() && b.take() {
		s.ops.Add(1)
		page, err := pager.NextPage(ctx)
		if err != nil {
			return err
		}
		if err := each(page.Entities); err != nil {
			return err
		}
	}
	return nil
}

// deleteWhere deletes the rows filter selects (keep, when set, confirms
// each), in transactions of up to 100 rows of one partition, within the
// budget. It returns the rows deleted.
func (s *Store) deleteWhere(ctx context.Context, filter string, b *budget, keep func([]byte) bool) (int, error) {
	opts := &aztables.ListEntitiesOptions{Filter: &filter}
	if keep == nil {
		sel := "PartitionKey,RowKey"
		opts.Select = &sel
	}
	deleted := 0
	err := s.listed(ctx, opts, b, func(entities [][]byte) error {
		byPartition := map[string][][]byte{}
		for _, raw := range entities {
			if keep != nil && !keep(raw) {
				continue
			}
			var e aztables.Entity
			if err := json.Unmarshal(raw, &e); err != nil {
				return err
			}
			key, _ := json.Marshal(aztables.Entity{PartitionKey: e.PartitionKey, RowKey: e.RowKey})
			byPartition[e.PartitionKey] = append(byPartition[e.PartitionKey], key)
		}
		for _, ents := range byPartition {
			for start := 0; start < len(ents); start += 100 {
				if !b.take() {
					return nil
				}
				batch := ents[start:min(start+100, len(ents))]
				if err := s.transact(ctx, batch, aztables.TransactionTypeDelete, nil); err != nil {
					return err
				}
				deleted += len(batch)
			}
		}
		return nil
	})
	return deleted, err
}
