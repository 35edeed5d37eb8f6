package azstore_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/azstore"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/replay"
	"github.com/remediator/remediator/internal/runs"
	"github.com/remediator/remediator/internal/testing/azurite"
)

func open(t *testing.T) *azstore.Store {
	t.Helper()
	st, _, err := azstore.Open(context.Background(), azstore.Config{ConnectionString: azurite.Start(t), Table: "remediatorruns", Queue: "remediation-work"})
	require.NoError(t, err)
	return st
}

func TestIdempotencyKeys(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	prev, err := st.Begin(ctx, "remediate:ticket-1", time.Hour)
	require.NoError(t, err)
	assert.Nil(t, prev, "a new key is reserved")
	_, err = st.Begin(ctx, "remediate:ticket-1", time.Hour)
	assert.ErrorIs(t, err, replay.ErrInProgress, "a second request waits for the first")

	answer := replay.Stored{Status: 202, Headers: map[string]string{"Location": "https://x/api/runs/1"}, Body: json.RawMessage(`{"run_id":"1"}`), RequestHash: "h"}
	require.NoError(t, st.Finish(ctx, "remediate:ticket-1", answer))
	prev, err = st.Begin(ctx, "remediate:ticket-1", time.Hour)
	require.NoError(t, err)
	require.NotNil(t, prev)
	assert.Equal(t, answer.Status, prev.Status)
	assert.JSONEq(t, string(answer.Body), string(prev.Body))
	assert.Equal(t, answer.Headers, prev.Headers)

	// An answer too large for one table property is split and joined.
	big := replay.Stored{Status: 200, Body: json.RawMessage(`"` + strings.Repeat("x", 200_000) + `"`)}
	_, err = st.Begin(ctx, "alert:big", time.Hour)
	require.NoError(t, err)
	require.NoError(t, st.Finish(ctx, "alert:big", big))
	prev, err = st.Begin(ctx, "alert:big", time.Hour)
	require.NoError(t, err)
	assert.Equal(t, len(big.Body), len(prev.Body))

	// Abandoned keys run anew; expired keys are taken over.
	_, err = st.Begin(ctx, "remediate:ticket-2", time.Hour)
	require.NoError(t, err)
	require.NoError(t, st.Abandon(ctx, "remediate:ticket-2"))
	prev, err = st.Begin(ctx, "remediate:ticket-2", time.Millisecond)
	require.NoError(t, err)
	assert.Nil(t, prev)
	require.NoError(t, st.Finish(ctx, "remediate:ticket-2", answer))
	time.Sleep(1100 * time.Millisecond)
	prev, err = st.Begin(ctx, "remediate:ticket-2", time.Hour)
	require.NoError(t, err)
	assert.Nil(t, prev, "an expired answer is not replayed")
	assert.Positive(t, st.Ops())
}

// TestLargeAnswersAreKept: answers up to MAX_ANSWER_BYTES (4 MiB), which
// do not fit one entity (1 MiB, strings counted in UTF-16), are kept whole,
// compressible or not, and retention removes every row of them.
func TestLargeAnswersAreKept(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	raw := make([]byte, 3<<20)
	_, _ = rand.Read(raw)
	noise, _ := json.Marshal(base64.StdEncoding.EncodeToString(raw))
	var devices []string
	for i := range 16000 {
		devices = append(devices, fmt.Sprintf(`{"device_id":"%08d-0000-4000-8000-000000000000","device_name":"PC-Zürich-😀-%d","outcome":"succeeded"}`, i, i))
	}
	summary := json.RawMessage(`{"devices":[` + strings.Join(devices, ",") + `]}`)
	require.Greater(t, len(summary), 1<<20)
	before := st.Ops()
	for key, body := range map[string]json.RawMessage{"remediate:noise": noise, "remediate:summary": summary} {
		_, err := st.Begin(ctx, key, time.Minute)
		require.NoError(t, err)
		require.NoError(t, st.Finish(ctx, key, replay.Stored{Status: 200, Body: body, RequestHash: "h", Headers: map[string]string{"X": "y"}}), key)
		prev, err := st.Begin(ctx, key, time.Hour)
		require.NoError(t, err)
		require.NotNil(t, prev, key)
		assert.Equal(t, 200, prev.Status)
		assert.Equal(t, "h", prev.RequestHash)
		assert.True(t, string(body) == string(prev.Body), "%s: the body comes back byte for byte", key)
	}
	assert.Less(t, st.Ops()-before, int64(30), "a few operations per answer, not one per device")

	// Retention two minutes on: the answers have expired.
	deleted := 0
	for range 20 {
		c, err := st.Cleanup(ctx, runs.Retention{RunsBefore: time.Now().Add(-time.Hour), CooldownBefore: time.Now().Add(-time.Hour), Now: time.Now().Add(2 * time.Minute), MaxOps: 40})
		require.NoError(t, err)
		deleted += c.Keys
		if c.Done {
			break
		}
	}
	assert.Greater(t, deleted, 2, "the key rows and their part rows")
	prev, err := st.Begin(ctx, "remediate:noise", time.Hour)
	require.NoError(t, err)
	assert.Nil(t, prev, "deleted: the key is free again")
}

func TestCooldownAcrossInstances(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	script := "a85696b5-3b72-442f-b948-8cb432a00b33"
	now := time.Now().UTC().Truncate(time.Second)
	keys := make([]remediate.CooldownKey, 150)
	for i := range keys {
		keys[i] = remediate.CooldownKey{DeviceID: fmt.Sprintf("dev-%03d", i), ScriptID: script}
	}
	require.NoError(t, st.Triggered(ctx, keys, now.Add(-2*time.Hour)))
	require.NoError(t, st.Triggered(ctx, keys[:10], now))
	recent, err := st.Recent(ctx, script, now.Add(-time.Hour))
	require.NoError(t, err)
	assert.Len(t, recent, 10, "only the devices triggered within the period")
	for _, k := range keys[:10] {
		assert.True(t, recent[k.DeviceID].Equal(now), k.DeviceID)
	}
	other, err := st.Recent(ctx, "87654321-4321-4321-4321-ba9876543210", now.Add(-24*time.Hour))
	require.NoError(t, err)
	assert.Empty(t, other)
}

func TestRunsStoreKeysAndConflicts(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	_, err := st.Meta(ctx, "no-such-run")
	assert.ErrorIs(t, err, runs.ErrNotFound)
	_, err = st.Meta(ctx, "bad'key")
	assert.ErrorIs(t, err, runs.ErrNotFound, "ids that cannot be keys are unknown runs, not errors")

	rows := []runs.Row{{Index: 0, DeviceResult: remediate.DeviceResult{DeviceID: "d0", Outcome: remediate.NotAttempted, Reason: remediate.ReasonQueued}}}
	require.NoError(t, st.CreateRun(ctx, runs.Meta{RunID: "r1", Devices: 1, Summary: []byte(`{}`)}, rows, []runs.Chunk{{Number: 0, Open: 1}}))
	a, err := st.Chunk(ctx, "r1", 0)
	require.NoError(t, err)
	b := a
	a.Open = 0
	require.NoError(t, st.Save(ctx, "r1", &a, nil))
	assert.ErrorIs(t, st.Save(ctx, "r1", &b, nil), runs.ErrConflict, "a second worker with a stale chunk is refused")
	c, err := st.Chunk(ctx, "r1", 0)
	require.NoError(t, err)
	assert.Zero(t, c.Open)
}

func TestWorkNeverExpires(t *testing.T) {
	conn := azurite.Start(t)
	_, q, err := azstore.Open(context.Background(), azstore.Config{ConnectionString: conn, Table: "remediatorruns", Queue: "remediation-work"})
	require.NoError(t, err)
	require.NoError(t, q.Send(context.Background(), runs.Message{RunID: "r1", Items: []runs.WorkItem{{DeviceID: "d"}}}, 0))
	svc, err := azqueue.NewServiceClientFromConnectionString(conn, nil)
	require.NoError(t, err)
	peek, err := svc.NewQueueClient("remediation-work").PeekMessage(context.Background(), nil)
	require.NoError(t, err)
	require.Len(t, peek.Messages, 1)
	assert.Greater(t, peek.Messages[0].ExpirationTime.Year(), time.Now().Year()+100, "a work item waits as long as it must")
	raw, err := base64.StdEncoding.DecodeString(*peek.Messages[0].MessageText)
	require.NoError(t, err, "base64, as the queue trigger expects")
	assert.JSONEq(t, `{"run":"r1","chunk":0,"items":[{"i":0,"d":"d","s":"","c":""}]}`, string(raw))
}

// TestRetention: a cleanup deletes the runs created before the retention
// cut-off (every row), the idempotency keys that expired and the old
// cooldown rows, keeps the rest, and never makes more storage operations
// than its budget: a small budget finishes over several calls.
func TestRetention(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	st, _, err := azstore.Open(context.Background(), azstore.Config{ConnectionString: conn, Table: "retention", Queue: "work"})
	require.NoError(t, err)
	ctx := context.Background()
	now := time.Now().UTC()
	mk := func(id string, created time.Time, devices, open int) {
		rows := make([]runs.Row, devices)
		for i := range rows {
			rows[i] = runs.Row{Index: i}
		}
		require.NoError(t, st.CreateRun(ctx, runs.Meta{RunID: id, Created: created, Devices: devices, Summary: []byte(`{}`)}, rows, []runs.Chunk{{Number: 0, Open: open}}))
	}
	mk("oldrun1", now.Add(-40*24*time.Hour), 150, 150) // unfinished, but past retention + the longest a run lasts
	mk("oldrun2", now.Add(-31*24*time.Hour), 10, 0)    // finished
	mk("liverun", now.Add(-32*24*time.Hour), 10, 4)    // still being worked
	mk("newrun", now.Add(-time.Hour), 10, 0)
	_, err = st.Begin(ctx, "expired", time.Millisecond)
	require.NoError(t, err)
	_, err = st.Begin(ctx, "fresh", time.Hour)
	require.NoError(t, err)
	script := "87654321-4321-4321-4321-ba9876543210"
	require.NoError(t, st.Triggered(ctx, []remediate.CooldownKey{{DeviceID: "old-device", ScriptID: script}}, now.Add(-time.Hour)))
	require.NoError(t, st.Triggered(ctx, []remediate.CooldownKey{{DeviceID: "new-device", ScriptID: script}}, now))
	time.Sleep(5 * time.Millisecond)

	p := runs.Retention{RunsBefore: now.Add(-30 * 24 * time.Hour), UnfinishedBefore: now.Add(-37 * 24 * time.Hour), CooldownBefore: now.Add(-10 * time.Minute), Now: time.Now(), MaxOps: 12}
	calls := 0
	var total runs.Cleaned
	for {
		before := st.Ops()
		c, err := st.Cleanup(ctx, p)
		require.NoError(t, err)
		assert.LessOrEqual(t, st.Ops()-before, int64(p.MaxOps), "within the budget")
		total.Runs, total.Keys, total.Cooldowns = total.Runs+c.Runs, total.Keys+c.Keys, total.Cooldowns+c.Cooldowns
		calls++
		require.Less(t, calls, 50, "the cleanup finishes")
		if c.Done {
			break
		}
	}
	assert.Greater(t, calls, 1, "a small budget takes several calls")
	assert.Equal(t, 2, total.Runs)
	for _, id := range []string{"oldrun1", "oldrun2"} {
		_, err := st.Meta(ctx, id)
		assert.ErrorIs(t, err, runs.ErrNotFound, id)
		rows, err := st.Rows(ctx, id, 0, 200)
		assert.NoError(t, err)
		assert.Empty(t, rows, "every row of %s is gone", id)
	}
	_, err = st.Meta(ctx, "newrun")
	assert.NoError(t, err, "a recent run is kept")
	_, err = st.Meta(ctx, "liverun")
	assert.NoError(t, err, "a run still being worked is kept")
	rows, err := st.Rows(ctx, "liverun", 0, 200)
	assert.NoError(t, err)
	assert.Len(t, rows, 10, "whole")
	assert.Equal(t, 1, total.Keys)
	prev, err := st.Begin(ctx, "fresh", time.Hour)
	assert.ErrorIs(t, err, replay.ErrInProgress, "the fresh key is kept (%v)", prev)
	assert.Equal(t, 1, total.Cooldowns)
	recent, err := st.Recent(ctx, script, time.Time{})
	require.NoError(t, err)
	assert.Equal(t, []string{"new-device"}, slices.Collect(maps.Keys(recent)))
}
