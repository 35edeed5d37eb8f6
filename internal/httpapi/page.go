package httpapi

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// The run as a page: what a person opens from a notification. The status
// URL answers it with Accept: text/html, or format=html for a link pasted
// into chat; the same function, key and caller scoping as the JSON. The
// page is one document: inline SVG charts, one stylesheet allowed by its
// hash, no script, font or remote resource (Content-Security-Policy
// default-src 'none'), so it works in a locked-down tenant. Every string
// from Graph or a device is escaped (pagehtml.go). The page is written
// without html/template, whose reflection would keep every method of the
// Graph SDK's models in the binary (11 MB → 85 MB).

// pageStyle is the page's one stylesheet (the text of its <style>).
const pageStyle = `body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:1rem;color:#1b1b1b;background:#fff;line-height:1.4}
main{max-width:60rem;margin:0 auto}h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
.state{display:inline-block;padding:.1rem .5rem;border:1px solid #1b1b1b;border-radius:.3rem;font-weight:600}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border-bottom:1px solid #767676;padding:.3rem;text-align:left;vertical-align:top}
svg{display:block;width:100%;height:auto;max-width:40rem}form{display:inline}button{font-size:1rem;padding:.4rem .9rem;margin:.2rem .4rem .2rem 0;cursor:pointer}
a{color:#0b4f9c}.legend li{list-style:none}.legend{padding:0}code{word-break:break-all}`

// pageCSP is the page's Content-Security-Policy: nothing but its own
// stylesheet, and forms to itself.
var pageCSP = "default-src 'none'; style-src 'sha256-" + func() string {
	h := sha256.Sum256([]byte(pageStyle))
	return base64.StdEncoding.EncodeToString(h[:])
}() + "'; img-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// csrfCookie is the double-submit token of the page's forms: the cookie
// and the form must carry the same random value.
const csrfCookie = "remediator_csrf"

// wantsPage reports whether r asks for the run as a page.
func wantsPage(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "html":
		return true
	case "json":
		return false
	}
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "text/html") && !strings.Contains(accept, "application/json")
}

// bar is one segment of a chart.
type bar struct {
	Label string
	Count int
	Fill  string
	// X and W place the segment in the stacked progress bar (percent).
	X, W string
}

// stack places bars side by side over total.
func stack(bars []bar, total int) {
	x := 0.0
	for i := range bars {
		w := 0.0
		if total > 0 {
			w = 100 * float64(bars[i].Count) / float64(total)
		}
		bars[i].X, bars[i].W = strconv.FormatFloat(x, 'f', 2, 64), strconv.FormatFloat(w, 'f', 2, 64)
		x += w
	}
}

// pageData is what the page shows.
type pageData struct {
	Run      *remediate.Summary
	Done     bool
	Queued   int
	Outcomes []bar
	Scripts  []bar
	Followed bool
	// Triggered is the page's devices whose scripts were followed.
	Triggered int
	Attention []remediate.DeviceResult
	Page      int
	// PageNumber is Page counted from 1, as a person reads it.
	PageNumber int
	PageCount  int
	JSONURL    string
	PrevURL    string
	NextURL    string
	FollowURL  string
	CancelURL  string
	ResumeURL  string
	CSRF       string
	Refresh    int
}

// Colours with at least 4.5:1 against white (WCAG AA), told apart by
// label too, never by colour alone.
var (
	fillOK      = "#1a7f37"
	fillSkipped = "#59636e"
	fillFailed  = "#b3261e"
	fillNot     = "#8a5a00"
	fillPending = "#0b4f9c"
)

// renderPage is the HTML answer of run id's status.
func renderPage(id string, st runs.Status, l links, r *http.Request, follow bool) Answer {
	s := st.Summary
	status, _ := l.locations(id)
	link := func(q url.Values) string { // another view of the page, with the caller's own key
		q = maps.Clone(q)
		q.Set("format", "html")
		return l.keyed(status, q)
	}
	d := pageData{Run: s, Done: st.Done, Queued: st.Queued, Followed: follow,
		Page: st.Page, PageNumber: st.Page + 1, PageCount: st.PageCount}
	c := s.Counts
	d.Outcomes = []bar{{Label: "Triggered", Count: c.Succeeded, Fill: fillOK}, {Label: "Skipped", Count: c.Skipped, Fill: fillSkipped}, {Label: "Failed", Count: c.Failed, Fill: fillFailed},
		{Label: "Not attempted", Count: c.NotAttempted, Fill: fillNot}, {Label: "Planned", Count: c.Planned, Fill: fillPending}}
	stack(d.Outcomes, c.Total)
	if follow {
		states := map[string]int{}
		for _, dv := range s.Devices {
			if dv.FollowUp != nil {
				states[dv.FollowUp.State]++
			}
		}
		d.Scripts = []bar{{Label: "No issue", Count: states[remediate.FollowNoIssue], Fill: fillOK},
			{Label: "Remediated", Count: states[remediate.FollowRemediated], Fill: fillPending},
			{Label: "Remediation failed", Count: states[remediate.FollowRemediationFailed], Fill: fillFailed},
			{Label: "Script error", Count: states[remediate.FollowScriptError], Fill: fillNot},
			{Label: "Pending", Count: states[remediate.FollowPending], Fill: fillSkipped}}
		for _, b := range d.Scripts {
			d.Triggered += b.Count
		}
		stack(d.Scripts, d.Triggered)
	}
	for _, dv := range s.Devices {
		attention := dv.Outcome == remediate.Failed || dv.Reason == remediate.ReasonOutcomeUnknown
		if f := dv.FollowUp; f != nil && (f.State == remediate.FollowRemediationFailed || f.State == remediate.FollowScriptError) {
			attention = true
		}
		if attention {
			d.Attention = append(d.Attention, dv)
		}
	}
	d.JSONURL = l.keyed(status, nil)
	f := url.Values{}
	if follow {
		f.Set("follow", "true")
	}
	if st.Page > 0 {
		f.Set("page", strconv.Itoa(st.Page-1))
		d.PrevURL = link(f)
	}
	if st.Page+1 < st.PageCount {
		f.Set("page", strconv.Itoa(st.Page+1))
		d.NextURL = link(f)
	}
	if !follow {
		d.FollowURL = link(url.Values{"follow": {"true"}, "page": {strconv.Itoa(st.Page)}})
	}
	ans := Answer{Status: http.StatusOK, Headers: map[string]string{"Content-Security-Policy": pageCSP,
		"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "same-origin"}}
	if !st.Done || s.Status == remediate.StatusHalted {
		// The person's buttons: cancel a run that is not over, resume a
		// halted rollout; POST forms with the page's token.
		action := func(verb string) string { return l.keyed(status+"/"+verb, nil) }
		d.CancelURL = action("cancel")
		if s.Status == remediate.StatusHalted {
			d.ResumeURL = action("resume")
		}
		d.CSRF = csrfOf(r)
		ans.Headers["Set-Cookie"] = (&http.Cookie{Name: csrfCookie, Value: d.CSRF, Path: "/", HttpOnly: true,
			Secure: r.TLS != nil || strings.HasPrefix(l.base, "https://"), SameSite: http.SameSiteStrictMode}).String()
	}
	if !st.Done {
		d.Refresh = 10
		ans.Headers["Refresh"] = "10" // no script: the page reloads itself while the run goes on
	}
	ans.HTML = d.render()
	return ans
}

// csrfOf is r's page token: its cookie's, or a new random one.
func csrfOf(r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 32 {
		return c.Value
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// formRefusal is why a cancel or resume from a web page is refused, or nil:
// a browser's POST from another origin never passes; a form from this
// deployment's page must carry its page's token (double submit: the
// cookie and the form field the same). Flows and scripts send no Origin.
func (a *API) formRefusal(r *http.Request) *Answer {
	origin := r.Header.Get("Origin")
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if origin == "" && mt != "application/x-www-form-urlencoded" {
		return nil
	}
	refuse := func(msg string) *Answer {
		ans := ErrorAnswer(fault.FormRejected, msg)
		return &ans
	}
	own := a.baseURL(r)
	if own == "" && r.Host != "" {
		own = "https://" + r.Host
	}
	if origin != "" && !strings.EqualFold(origin, own) {
		return refuse("requests from other web pages are refused (Origin " + origin + ")")
	}
	c, err := r.Cookie(csrfCookie)
	r.Body = http.MaxBytesReader(nil, r.Body, 4096)
	if err != nil || r.ParseForm() != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostForm.Get("csrf"))) != 1 || len(c.Value) != 32 {
		return refuse("the form does not carry its page's token: reload the page and try again")
	}
	return nil
}
