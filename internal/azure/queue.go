package azure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/remediator/remediator/internal/runs"
)

// cleanup serves the timer function cleanup: one bounded pass of
// retention. It always answers 2xx to the host; a failure is logged and
// the next tick tries again.
func (h *Host) cleanup(w http.ResponseWriter, r *http.Request) {
	invocation := r.Header.Get("X-Azure-Functions-InvocationId")
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	if h.settings.Runs == nil {
		writeInvokeResponse(w, invokeResponse{Logs: []string{"cleanup: no run storage is configured; nothing to clean"}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), max(h.settings.FunctionTimeout-workMargin, h.settings.FunctionTimeout/2))
	defer cancel()
	c, err := h.settings.Runs.Cleanup(ctx)
	msg := fmt.Sprintf("remediator cleanup: %d runs, %d idempotency keys, %d cooldown rows deleted; done: %v", c.Runs, c.Keys, c.Cooldowns, c.Done)
	if err != nil {
		h.log.Warn("cleanup failed; the next tick tries again", "invocation_id", invocation, "error", err.Error())
		msg = "remediator cleanup failed: " + err.Error()
	}
	writeInvokeResponse(w, invokeResponse{Logs: []string{msg}})
}

// workMargin is kept between the end of a worker's work and
// functionTimeout, to record outcomes and queue the rest.
const workMargin = 30 * time.Second

// queue serves a queue-triggered function (payload mode): the message is
// Data.msg, the delivery count Metadata.DequeueCount. 200 tells the host
// the message is done; 500 makes it deliver the message again, and after
// maxDequeueCount deliveries move it to the poison queue.
func (h *Host) queue(name string, work func(*runs.Service, context.Context, runs.Message) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		invocation := r.Header.Get("X-Azure-Functions-InvocationId")
		started := time.Now()
		var env envelope
		err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&env)
		var msg runs.Message
		if err == nil {
			raw, ok := env.binding("msg")
			if !ok {
				err = errors.New("no message binding in Data")
			} else {
				msg, err = runs.DecodeMessage(raw)
			}
		}
		if err != nil {
			// An unreadable message will never be readable: fail it, so
			// the host moves it to the poison queue where it stays for
			// inspection.
			h.log.Error("queue message unreadable", "function", name, "invocation_id", invocation, "error", err.Error())
			http.Error(w, "unreadable message: "+err.Error(), http.StatusInternalServerError)
			return
		}
		dequeue, _ := strconv.Atoi(string(bytes.Trim(env.Metadata["DequeueCount"], `"`)))
		if h.settings.Runs == nil {
			h.log.Error("queue message but no run storage is configured", "function", name, "invocation_id", invocation)
			http.Error(w, "no run storage is configured", http.StatusInternalServerError)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), max(h.settings.FunctionTimeout-workMargin, h.settings.FunctionTimeout/2))
		defer cancel()
		err = work(h.settings.Runs, ctx, msg)
		attrs := []any{"invocation_id", invocation, "function", name, "run_id", msg.RunID, "chunk", msg.Chunk,
			"devices", len(msg.Items), "dequeue_count", dequeue, "duration_ms", time.Since(started).Milliseconds()}
		if err != nil {
			h.log.Error("invocation failed; the host will deliver the message again", append(attrs, "error", err.Error())...)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h.log.Info("invocation", attrs...)
		writeInvokeResponse(w, invokeResponse{Logs: []string{fmt.Sprintf("remediator %s: run %s chunk %d, %d devices", name, msg.RunID, msg.Chunk, len(msg.Items))}})
	}
}
