package httpapi

import (
	"bytes"
	"net/http"
)

// Recorded is an answer served in-process, for hosts whose transport is
// not HTTP (Functions payload mode, Lambda events): they build the
// caller's request, record the answer and send it back their own way.
type Recorded struct {
	Status int
	header http.Header
	Body   bytes.Buffer
}

// Record serves r with h and returns the answer.
func Record(h http.Handler, r *http.Request) *Recorded {
	rec := &Recorded{Status: http.StatusOK, header: http.Header{}}
	h.ServeHTTP(rec, r)
	return rec
}

// Header implements http.ResponseWriter.
func (r *Recorded) Header() http.Header { return r.header }

// Write implements http.ResponseWriter.
func (r *Recorded) Write(b []byte) (int, error) { return r.Body.Write(b) }

// WriteHeader implements http.ResponseWriter.
func (r *Recorded) WriteHeader(status int) { r.Status = status }

// Headers are the answer's headers, one value each.
func (r *Recorded) Headers() map[string]string {
	out := map[string]string{}
	for k := range r.header {
		out[k] = r.header.Get(k)
	}
	return out
}
