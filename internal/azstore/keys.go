package azstore

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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
	// Stored is the answer; its body is kept apart, compressed, in binary
	// properties (Body0, Body1...) of this row and of part rows when it
	// does not fit here.
	Stored  *replay.Stored `json:"stored,omitempty"`
	Began   time.Time      `json:"began"`
	Expires time.Time      `json:"expires"`
	// BodyPieces is the number of binary pieces of the gzipped body;
	// BodyRows the part rows (<key>-p1, -p2...) beyond this one.
	BodyPieces int `json:"body_pieces,omitempty"`
	BodyRows   int `json:"body_rows,omitempty"`
}

// bodyPiece is the most bytes one binary property holds: 48 KiB, whose
// base64 (64 K characters) also stays within what the emulator accepts.
const bodyPiece = 48 << 10

func keyOf(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

func partKey(rk string, n int) string { return fmt.Sprintf("%s-p%d", rk, n) }

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
	s.ops.Add(1)
	resp, err := s.table.GetEntity(ctx, keysPartition, rk, nil)
	if err != nil {
		return nil, err
	}
	var row keyRow
	etag, err := value(resp.Value, &row)
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
	case row.BodyPieces > 0:
		body, err := s.readBody(ctx, rk, resp.Value, row)
		if err != nil {
			return nil, err
		}
		row.Stored.Body = body
	}
	return row.Stored, nil
}

// Finish implements replay.Store. The body is gzipped into binary pieces:
// as many as fit go into the key's own row, the rest into part rows
// written first, so that an answer whose key row says it is kept is whole.
// Every row is within Azure Tables' limits (checkEntity), whatever the
// answer's size.
func (s *Store) Finish(ctx context.Context, key string, st replay.Stored) error {
	if err := s.check(); err != nil {
		return err
	}
	rk := keyOf(key)
	var row keyRow
	if _, err := s.get(ctx, keysPartition, rk, &row); err != nil {
		return err
	}
	pieces, err := gzipPieces(st.Body)
	if err != nil {
		return err
	}
	st.Body = nil
	// The key row's JSON names how many rows follow: sized first with the
	// most there could be, so that the final, shorter JSON fits as well.
	row.Stored, row.BodyPieces, row.BodyRows = &st, len(pieces), len(pieces)
	_, inHead, err := fill(keysPartition, rk, row, 0, pieces)
	if err != nil {
		return err
	}
	meta := keyRow{Began: row.Began, Expires: row.Expires}
	var parts [][]byte
	for at := inHead; at < len(pieces); {
		e, n, err := fill(keysPartition, partKey(rk, len(parts)+1), meta, at, pieces)
		if err != nil {
			return err
		}
		parts, at = append(parts, e), at+n
	}
	row.BodyRows = len(parts)
	head, n, err := fill(keysPartition, rk, row, 0, pieces[:inHead])
	if err != nil {
		return err
	}
	if n != inHead {
		return fmt.Errorf("azstore: the answer's key row took %d pieces of %d", n, inHead)
	}
	for _, e := range parts {
		s.ops.Add(1)
		if _, err := s.table.UpsertEntity(ctx, e, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
			return err
		}
	}
	s.ops.Add(1)
	_, err = s.table.UpsertEntity(ctx, head, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace})
	return err
}

// fill is the entity pk/rk holding v as JSON and as many of pieces[first:]
// as fit within the table's limits, as Body<i> binary properties; n is how
// many it took (at least one when v leaves room, or an error).
func fill(pk, rk string, v any, first int, pieces [][]byte) (e []byte, n int, err error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, 0, err
	}
	props := map[string]any{}
	for i, part := range splitString(string(b), propChunk) {
		props[fmt.Sprintf("J%d", i)] = part
	}
	// Budget with both counts: Azure's and the JSON's (base64 is 4/3 of
	// the bytes, plus the name and its type annotation).
	size, wire := entitySize(pk, rk, props), len(b)+len(b)/8+256
	for i := first; i < len(pieces) && len(props) < maxProperties; i++ {
		name := fmt.Sprintf("Body%d", i)
		ps := 8 + 2*len(name) + 4 + len(pieces[i])
		pw := base64.StdEncoding.EncodedLen(len(pieces[i])) + 2*len(name) + 40
		if size+ps > maxEntityBytes || wire+pw > maxEntityBytes {
			break
		}
		props[name] = aztables.EDMBinary(pieces[i])
		size, wire, n = size+ps, wire+pw, n+1
	}
	if n == 0 && first < len(pieces) {
		return nil, 0, fmt.Errorf("azstore: no room for the answer's body in %s/%s", pk, rk)
	}
	e, err = checkEntity(pk, rk, props)
	return e, n, err
}

// gzipPieces is b gzipped, in pieces of at most bodyPiece bytes.
func gzipPieces(b []byte) ([][]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	var out [][]byte
	for z := buf.Bytes(); len(z) > 0; z = z[min(len(z), bodyPiece):] {
		out = append(out, z[:min(len(z), bodyPiece)])
	}
	return out, nil
}

// maxStoredBody bounds what a kept answer may unpack to: far above any
// answer (MAX_ANSWER_BYTES is at most 64 MiB), so a damaged row can never
// exhaust memory.
const maxStoredBody = 64 << 20

// readBody joins a kept answer's pieces from its key row (raw) and its
// part rows, and unpacks them.
func (s *Store) readBody(ctx context.Context, rk string, raw []byte, row keyRow) ([]byte, error) {
	pieces := make([][]byte, row.BodyPieces)
	collect := func(raw []byte) error {
		var e aztables.EDMEntity
		if err := json.Unmarshal(raw, &e); err != nil {
			return err
		}
		for name, v := range e.Properties {
			var i int
			if _, err := fmt.Sscanf(name, "Body%d", &i); err != nil {
				continue
			}
			b, ok := v.(aztables.EDMBinary)
			if !ok || i < 0 || i >= len(pieces) {
				return fmt.Errorf("azstore: kept answer %s has a stray piece %s", rk, name)
			}
			pieces[i] = b
		}
		return nil
	}
	if err := collect(raw); err != nil {
		return nil, err
	}
	if row.BodyRows > 0 {
		if err := s.query(ctx, keysPartition, rk+"-p", rk+"-q", collect); err != nil {
			return nil, err
		}
	}
	var z bytes.Buffer
	for i, p := range pieces {
		if p == nil {
			return nil, fmt.Errorf("azstore: kept answer %s lacks piece %d of %d", rk, i, len(pieces))
		}
		z.Write(p)
	}
	zr, err := gzip.NewReader(&z)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(zr, maxStoredBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxStoredBody {
		return nil, fmt.Errorf("azstore: kept answer %s unpacks to more than %d bytes", rk, maxStoredBody)
	}
	return body, nil
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
