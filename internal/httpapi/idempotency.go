package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/replay"
)

func hashOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// idempotent answers fn once per key within the TTL: later requests with
// the key get the first answer again with Idempotent-Replayed: true and
// trigger nothing. Answers a retry should not replay (5xx, 429) are not
// kept.
func (a *API) idempotent(ctx context.Context, key string, request []byte, l links, fn func() Answer) Answer {
	hash := hashOf(request)
	var prev *replay.Stored
	var err error
	for {
		bctx, cancel := context.WithTimeout(ctx, a.opts.StoreTimeout)
		prev, err = a.opts.Replays.Begin(bctx, key, a.opts.IdempotencyTTL)
		cancel()
		if !errors.Is(err, replay.ErrInProgress) {
			break
		}
		// Another delivery is being answered: wait for its answer while
		// this one may.
		select {
		case <-ctx.Done():
			a := ErrorAnswer(fault.InProgress, "a request with this idempotency key is still being processed; retry later for its answer")
			a.Headers = map[string]string{"Retry-After": "10"}
			return a
		case <-time.After(500 * time.Millisecond):
		}
	}
	switch {
	case err != nil:
		a.log.Error("idempotency store unavailable; nothing was triggered", "error", err.Error())
		ans := ErrorAnswer(fault.StorageUnavailable, "the idempotency key could not be checked; nothing was triggered, send the request again")
		ans.Headers = map[string]string{"Retry-After": "30"}
		return ans
	case prev != nil && prev.RequestHash != "" && prev.RequestHash != hash:
		return Answer{Status: StatusOf(fault.IdempotencyKeyReused), Body: errorBody(fault.IdempotencyKeyReused,
			"this Idempotency-Key was used for a different request; use a new key", []fault.FieldError{{Field: "Idempotency-Key", Message: "reused with another body"}})}
	case prev != nil:
		h := map[string]string{}
		for k, v := range prev.Headers {
			h[k] = v
		}
		if loc, ok := h["Location"]; ok && l.code != "" {
			h["Location"] = loc + "?code=" + url.QueryEscape(l.code)
		}
		h["Idempotent-Replayed"] = "true"
		return Answer{Status: prev.Status, Headers: h, Body: prev.Body}
	}
	res := fn()
	// Keeping a large answer takes a write per MiB or so.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*a.opts.StoreTimeout)
	defer cancel()
	if res.Status >= 500 || res.Status == 429 || triggeredNothing(res) {
		// A retry should not replay a fault; and an answer that triggered
		// nothing (a refusal, a dry run) is cheaper to give again than to
		// keep: the key is released.
		if err := a.opts.Replays.Abandon(sctx, key); err != nil {
			a.log.Warn("idempotency key not released", "error", err.Error())
		}
		return res
	}
	// The function key a caller put in the query string goes into
	// Location, never into storage: a replay adds the replaying caller's.
	headers := map[string]string{}
	for k, v := range res.Headers {
		headers[k] = v
	}
	if loc, ok := headers["Location"]; ok {
		headers["Location"], _, _ = strings.Cut(loc, "?")
	}
	body, err := json.Marshal(res.Body)
	if err == nil {
		err = a.opts.Replays.Finish(sctx, key, replay.Stored{Status: res.Status, Headers: headers, Body: body, RequestHash: hash})
	}
	if err != nil {
		return a.unkept(sctx, key, res, replay.Stored{Status: res.Status, Headers: headers, RequestHash: hash}, err)
	}
	return res
}

// triggeredNothing reports whether res is an answer that triggered
// nothing: a refusal (4xx other than 424, whose run ran) or a dry run.
func triggeredNothing(res Answer) bool {
	sum, _ := res.Body.(*remediate.Summary)
	return (res.Status >= 400 && res.Status < 500 && res.Status != StatusOf(fault.DevicesFailed)) || (sum != nil && sum.Status == remediate.StatusPlanned)
}

// unkept answers when res could not be kept for its key (storage failed
// or timed out). It is never silent:
//   - (an answer that triggered nothing was never to be kept: the key was
//     released, so a retry runs anew, which is safe);
//   - the answer's short form (status, run id, counts, no device
//     list) is kept in its place, so a retry replays that instead of
//     triggering the devices again;
//   - when even that cannot be kept, the answer says so (the
//     Idempotency-Kept: false header and a warning): the key stays held,
//     so a retry within 15 minutes gets 409 and one after that runs again.
func (a *API) unkept(ctx context.Context, key string, res Answer, st replay.Stored, cause error) Answer {
	a.log.Error("answer not kept for its idempotency key", "error", cause.Error())
	sum, _ := res.Body.(*remediate.Summary)
	if sum != nil {
		short := *sum
		short.OmittedDevices += len(sum.Devices)
		short.Devices = nil
		short.Warnings = append(append([]string(nil), sum.Warnings...),
			"this is a replay of the answer kept for its Idempotency-Key: the full answer could not be kept, so the devices are counted but not listed")
		body, err := json.Marshal(&short)
		if err == nil {
			st.Body = body
			err = a.opts.Replays.Finish(ctx, key, st)
		}
		if err == nil {
			return res
		}
		a.log.Error("short answer not kept for its idempotency key either", "error", err.Error())
		marked := *sum
		marked.Warnings = append(append([]string(nil), sum.Warnings...),
			"this answer could not be kept for its Idempotency-Key (storage failed): a retry with the key within 15 minutes gets 409, and after that runs the devices again")
		res.Body = &marked
	}
	h := map[string]string{"Idempotency-Kept": "false"}
	for k, v := range res.Headers {
		h[k] = v
	}
	res.Headers = h
	return res
}
