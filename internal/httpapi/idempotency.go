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
			a := ErrorAnswer("in_progress", "a request with this idempotency key is still being processed; retry later for its answer")
			a.Headers = map[string]string{"Retry-After": "10"}
			return a
		case <-time.After(500 * time.Millisecond):
		}
	}
	switch {
	case err != nil:
		a.log.Error("idempotency store unavailable; nothing was triggered", "error", err.Error())
		ans := ErrorAnswer("storage_unavailable", "the idempotency key could not be checked; nothing was triggered, send the request again")
		ans.Headers = map[string]string{"Retry-After": "30"}
		return ans
	case prev != nil && prev.RequestHash != "" && prev.RequestHash != hash:
		return Answer{Status: StatusOf("idempotency_key_reused"), Body: errorBody("idempotency_key_reused",
			"this Idempotency-Key was used for a different request; use a new key", []remediate.FieldError{{Field: "Idempotency-Key", Message: "reused with another body"}})}
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
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.StoreTimeout)
	defer cancel()
	if res.Status >= 500 || res.Status == 429 {
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
		a.log.Error("answer not kept for its idempotency key", "error", err.Error())
	}
	return res
}
