package azstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/replay"
)

// Idempotency keys live in partition "idempotency", hashed (keys are the
// caller's and may hold anything); device cooldowns in "cooldown-<script>",
// one row per device.
const (
	keysPartition = "idempotency"
	// abandonAfter is when a key held without an answer is taken to
	// belong to a process that died mid-request.
	abandonAfter = 15 * time.Minute
)

var (
	_ replay.Store       = (*Store)(nil)
	_ remediate.Cooldown = (*Store)(nil)
)

type keyRow struct {
	Stored  *replay.Stored `json:"stored,omitempty"`
	Began   time.Time      `json:"began"`
	Expires time.Time      `json:"expires"`
}

func keyOf(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// Begin implements replay.Store: an insert that only one request can
// win.
func (s *Store) Begin(ctx context.Context, key string, ttl time.Duration) (*replay.Stored, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rk, now := keyOf(key), time.Now().UTC()
	fresh, err := entity(keysPartition, rk, keyRow{Began: now, Expires: now.Add(ttl)})
	if err != nil {
		return nil, err
	}
	s.ops.Add(1)
	_, err = s.table.AddEntity(ctx, fresh, nil)
	if err == nil {
		return nil, nil
	}
	if !hasCode(err, http.StatusConflict) {
		return nil, err
	}
	var row keyRow
	etag, err := s.get(ctx, keysPartition, rk, &row)
	if err != nil {
		return nil, err
	}
	switch {
	case now.After(row.Expires), row.Stored == nil && now.Sub(row.Began) > abandonAfter:
		// Expired, or left by a request that never finished: take it over.
		e := azcore.ETag(etag)
		s.ops.Add(1)
		if _, err := s.table.UpdateEntity(ctx, fresh, &aztables.UpdateEntityOptions{IfMatch: &e, UpdateMode: aztables.UpdateModeReplace}); err != nil {
			if hasCode(err, http.StatusPreconditionFailed) {
				return nil, replay.ErrInProgress
			}
			return nil, err
		}
		return nil, nil
	case row.Stored == nil:
		return nil, replay.ErrInProgress
	}
	return row.Stored, nil
}

// Finish implements replay.Store.
func (s *Store) Finish(ctx context.Context, key string, st replay.Stored) error {
	if err := s.check(); err != nil {
		return err
	}
	rk := keyOf(key)
	var row keyRow
	if _, err := s.get(ctx, keysPartition, rk, &row); err != nil {
		return err
	}
	row.Stored = &st
	e, err := entity(keysPartition, rk, row)
	if err != nil {
		return err
	}
	s.ops.Add(1)
	_, err = s.table.UpsertEntity(ctx, e, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace})
	return err
}

// Abandon implements replay.Store.
func (s *Store) Abandon(ctx context.Context, key string) error {
	if err := s.check(); err != nil {
		return err
	}
	s.ops.Add(1)
	_, err := s.table.DeleteEntity(ctx, keysPartition, keyOf(key), nil)
	if hasCode(err, http.StatusNotFound) {
		return nil
	}
	return err
}

func cooldownPartition(script string) string { return "cooldown-" + script }

// Recent implements remediate.Cooldown with one query of the script's
// partition.
func (s *Store) Recent(ctx context.Context, script string, since time.Time) (map[string]time.Time, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	if !validKey(script) {
		return out, nil
	}
	filter := fmt.Sprintf("PartitionKey eq '%s' and At ge datetime'%s'", cooldownPartition(script), since.UTC().Format(time.RFC3339))
	sel := "RowKey,At"
	pager := s.table.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter, Select: &sel})
	for pager.More() {
		s.ops.Add(1)
		page, err := pager.NextPage(ctx)
		if err != nil {
			return out, err
		}
		for _, raw := range page.Entities {
			var e aztables.EDMEntity
			if err := e.UnmarshalJSON(raw); err != nil {
				return out, err
			}
			if at, ok := e.Properties["At"].(aztables.EDMDateTime); ok {
				out[e.RowKey] = time.Time(at)
			}
		}
	}
	return out, nil
}

// Triggered implements remediate.Cooldown: upserts in transactions of up
// to 100 rows of one script.
func (s *Store) Triggered(ctx context.Context, keys []remediate.CooldownKey, at time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	byScript := map[string][][]byte{}
	for _, k := range keys {
		if !validKey(k.DeviceID) || !validKey(k.ScriptID) {
			continue
		}
		e, err := (aztables.EDMEntity{Entity: aztables.Entity{PartitionKey: cooldownPartition(k.ScriptID), RowKey: k.DeviceID},
			Properties: map[string]any{"At": aztables.EDMDateTime(at.UTC())}}).MarshalJSON()
		if err != nil {
			return err
		}
		byScript[k.ScriptID] = append(byScript[k.ScriptID], e)
	}
	for _, ents := range byScript {
		for start := 0; start < len(ents); start += 100 {
			if err := s.transact(ctx, ents[start:min(start+100, len(ents))], aztables.TransactionTypeInsertReplace, nil); err != nil {
				return err
			}
		}
	}
	return nil
}
