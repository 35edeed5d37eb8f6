package intunesim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
)

type batchItem struct {
	ID        string            `json:"id"`
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Headers   map[string]string `json:"headers,omitempty"`
	Body      json.RawMessage   `json:"body,omitempty"`
	DependsOn []string          `json:"dependsOn,omitempty"`
}

type batchResponse struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// maxBatchItems is Graph's JSON batching limit.
const maxBatchItems = 20

// serveBatch runs each item through the same pipeline as a direct request,
// so every item is throttled and faulted on its own; the outer answer is 200
// with per-item statuses.
func (s *Server) serveBatch(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		Requests []batchItem `json:"requests"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, r, http.StatusBadRequest, "BadRequest", "Invalid batch payload format.")
		return
	}
	if len(req.Requests) == 0 {
		writeError(w, r, http.StatusBadRequest, "BadRequest", "Invalid batch payload format: no requests.")
		return
	}
	if len(req.Requests) > maxBatchItems {
		writeError(w, r, http.StatusBadRequest, "BadRequest", fmt.Sprintf("Number of batch requests %d exceeds the limit of %d.", len(req.Requests), maxBatchItems))
		return
	}
	seen := map[string]bool{}
	for _, it := range req.Requests {
		switch {
		case it.ID == "" || it.Method == "" || it.URL == "":
			writeError(w, r, http.StatusBadRequest, "BadRequest", "Batch request items need an id, a method and a url.")
			return
		case seen[it.ID]:
			writeError(w, r, http.StatusBadRequest, "BadRequest", "Batch request item id '"+it.ID+"' is not unique.")
			return
		case hasBody(it.Body) && contentType(it.Headers) == "":
			writeError(w, r, http.StatusBadRequest, "BadRequest", "Batch request item '"+it.ID+"' has a body but no Content-Type header.")
			return
		}
		for _, dep := range it.DependsOn {
			if !seen[dep] {
				writeError(w, r, http.StatusBadRequest, "BadRequest", "Batch request item '"+it.ID+"' depends on unknown item '"+dep+"'.")
				return
			}
		}
		seen[it.ID] = true
	}
	s.mu.Lock()
	s.counters.Batches++
	s.mu.Unlock()

	dropped := false
	ctx := withBatchAbort(r.Context(), &dropped)
	status := map[string]int{}
	out := make([]batchResponse, 0, len(req.Requests))
	for _, it := range req.Requests {
		resp := batchResponse{ID: it.ID}
		failedDep := false
		for _, dep := range it.DependsOn {
			failedDep = failedDep || status[dep] >= 400
		}
		if failedDep {
			resp.Status = http.StatusFailedDependency
			resp.Body = json.RawMessage(`{"error":{"code":"FailedDependency","message":"The request depends on a request that failed."}}`)
		} else {
			resp = s.runItem(ctx, r, it)
		}
		status[it.ID] = resp.Status
		out = append(out, resp)
	}
	if dropped {
		abort(r)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"responses": out})
}

func (s *Server) runItem(ctx context.Context, outer *http.Request, it batchItem) batchResponse {
	url := it.URL
	if !strings.HasPrefix(url, "/") {
		url = "/" + url
	}
	var body []byte
	if hasBody(it.Body) {
		body = it.Body
	}
	inner, err := http.NewRequestWithContext(ctx, strings.ToUpper(it.Method), "/beta"+url, bytes.NewReader(body))
	if err != nil {
		return batchResponse{ID: it.ID, Status: http.StatusBadRequest, Body: json.RawMessage(`{"error":{"code":"BadRequest","message":"Invalid request url."}}`)}
	}
	inner.Host = outer.Host
	for k, v := range it.Headers {
		inner.Header.Set(k, v)
	}
	for _, h := range []string{"Authorization", "X-Sim-App", "client-request-id"} {
		if v := outer.Header.Get(h); v != "" && inner.Header.Get(h) == "" {
			inner.Header.Set(h, v)
		}
	}
	rec := httptest.NewRecorder()
	s.serve(rec, inner, true)
	resp := batchResponse{ID: it.ID, Status: rec.Code, Headers: map[string]string{}}
	for k := range rec.Header() {
		resp.Headers[k] = rec.Header().Get(k)
	}
	if b := rec.Body.Bytes(); len(b) > 0 {
		if json.Valid(b) {
			resp.Body = b
		} else {
			resp.Body, _ = json.Marshal(string(b))
		}
	}
	return resp
}

// hasBody reports a body other than absent or null (the Go SDK sends
// "body":null on GET items).
func hasBody(b json.RawMessage) bool {
	t := strings.TrimSpace(string(b))
	return t != "" && t != "null"
}

func contentType(h map[string]string) string {
	for k, v := range h {
		if strings.EqualFold(k, "content-type") {
			return v
		}
	}
	return ""
}
