package httpapi

import (
	"fmt"
	"html"
	"strconv"
	"strings"

	"github.com/remediator/remediator/internal/remediate"
)

// pageWriter writes the page: text and attribute values always through
// esc, never as markup.
type pageWriter struct{ strings.Builder }

// esc is s as HTML text or a double-quoted attribute value.
func esc(s string) string { return html.EscapeString(s) }

// printf writes format, its arguments escaped first.
func (w *pageWriter) printf(format string, args ...any) {
	for i, a := range args {
		switch v := a.(type) {
		case string:
			args[i] = esc(v)
		case fmt.Stringer:
			args[i] = esc(v.String())
		}
	}
	fmt.Fprintf(w, format, args...)
}

func share(f float64) string { return strconv.FormatFloat(100*f, 'f', 0, 64) + "%" }

// render is the page's HTML.
func (d pageData) render() []byte {
	s := d.Run
	var w pageWriter
	w.printf(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>Remediation run %s: %s</title>
`, s.RunID, s.Status)
	w.WriteString("<style>" + pageStyle + "</style>\n</head>\n<body>\n<main>\n")
	w.printf(`<h1>Remediation run <code>%s</code></h1>
<p>State: <span class="state" id="state">%s</span>`, s.RunID, s.Status)
	if !d.Done {
		w.printf(` — %d devices still queued; this page reloads every %d seconds.`, d.Queued, d.Refresh)
	}
	w.WriteString("</p>\n")
	if s.Rollout != nil && s.Rollout.Halted != "" {
		w.printf("<p id=\"halted\"><strong>Rollout halted:</strong> %s</p>\n", s.Rollout.Halted)
	}
	c := s.Counts
	w.printf(`<h2 id="progress-heading">Progress</h2>
<svg id="progress" role="img" aria-labelledby="progress-title" viewBox="0 0 400 24" preserveAspectRatio="none">
<title id="progress-title">%d triggered, %d skipped, %d failed, %d not attempted of %d devices</title>
`, c.Succeeded, c.Skipped, c.Failed, c.NotAttempted, c.Total)
	for _, b := range d.Outcomes {
		if b.Count > 0 {
			w.printf("<rect data-outcome=\"%s\" data-count=\"%d\" x=\"%s%%\" y=\"0\" height=\"24\" width=\"%s%%\" fill=\"%s\"></rect>", b.Label, b.Count, b.X, b.W, b.Fill)
		}
	}
	w.WriteString("\n</svg>\n")
	w.chart("outcomes", "Devices by outcome", "Outcome", d.Outcomes, c.Total, true)
	if ro := s.Rollout; ro != nil {
		w.WriteString(`<h2 id="waves-heading">Rollout waves</h2>
<div class="scroll">
<table id="waves" aria-labelledby="waves-heading">
<thead><tr><th scope="col">Wave</th><th scope="col">Devices (with the waves before)</th><th scope="col">Triggered</th><th scope="col">Reported</th><th scope="col">Succeeded</th><th scope="col">Success share</th><th scope="col">Gate</th></tr></thead>
<tbody>
`)
		for _, wv := range ro.Waves {
			sh, gate := "—", "not read yet"
			if wv.Reported > 0 {
				sh = share(wv.SuccessShare)
			}
			if wv.Decision != "" {
				gate = wv.Decision + ": " + wv.Reason
			}
			w.printf("<tr class=\"wave\"><th scope=\"row\">%d</th><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td></tr>\n",
				wv.Wave, wv.Devices, wv.Triggered, wv.Reported, wv.Succeeded, sh, gate)
		}
		w.WriteString("</tbody>\n</table>\n</div>\n")
		w.printf("<p>Gate: at least %s of a wave's devices report, and at least %s of those succeed; current wave %d.</p>\n",
			share(ro.Gate.MinReported), share(ro.Gate.MinSuccess), ro.Current)
	}
	switch {
	case d.Followed:
		w.chart("scripts", "Script results on this page's devices", "Result", d.Scripts, d.Triggered, false)
	case d.FollowURL != "":
		w.printf("<p><a href=\"%s\">Read the scripts' results from Intune</a> (one read of each script's results).</p>\n", d.FollowURL)
	}
	w.WriteString(`<h2 id="attention-heading">Devices that need attention`)
	if d.PageCount > 1 {
		w.printf(" (page %d of the run's %d)", d.PageNumber, d.PageCount)
	}
	w.WriteString("</h2>\n")
	if len(d.Attention) == 0 {
		w.WriteString("<p id=\"no-attention\">None on this page.</p>\n")
	} else {
		w.WriteString(`<div class="scroll">
<table id="attention" aria-labelledby="attention-heading">
<thead><tr><th scope="col">Device</th><th scope="col">Outcome</th><th scope="col">Reason</th><th scope="col">Message</th></tr></thead>
<tbody>
`)
		for _, dv := range d.Attention {
			w.device(dv)
		}
		w.WriteString("</tbody>\n</table>\n</div>\n")
	}
	w.WriteString(`<nav aria-label="Pages">`)
	if d.PrevURL != "" {
		w.printf("<a href=\"%s\">Previous page</a> ", d.PrevURL)
	}
	if d.NextURL != "" {
		w.printf("<a href=\"%s\">Next page</a>", d.NextURL)
	}
	w.WriteString("</nav>\n")
	if d.CancelURL != "" {
		w.WriteString("<h2 id=\"actions-heading\">What you can do</h2>\n")
		if d.ResumeURL != "" {
			w.printf("<form method=\"post\" action=\"%s\"><input type=\"hidden\" name=\"csrf\" value=\"%s\"><button type=\"submit\" id=\"resume\">Resume with the next wave</button></form>\n", d.ResumeURL, d.CSRF)
		}
		w.printf("<form method=\"post\" action=\"%s\"><input type=\"hidden\" name=\"csrf\" value=\"%s\"><button type=\"submit\" id=\"cancel\">Cancel the run</button></form>\n", d.CancelURL, d.CSRF)
	}
	w.printf("<p><a href=\"%s\">This run as JSON</a></p>\n</main>\n</body>\n</html>\n", d.JSONURL)
	return []byte(w.String())
}

// chart is a table of bars (label, count, a bar of count of total).
func (w *pageWriter) chart(id, title, what string, bars []bar, total int, withTotal bool) {
	w.printf(`<h2 id="%s-heading">%s</h2>
<div class="scroll">
<table id="%s" aria-labelledby="%s-heading">
<thead><tr><th scope="col">%s</th><th scope="col">Devices</th><th scope="col">Share</th></tr></thead>
<tbody>
`, id, title, id, id, what)
	for _, b := range bars {
		w.printf(`<tr data-outcome="%s"><th scope="row">%s</th><td class="count">%d</td><td>
<svg role="img" aria-label="%s: %d of %d" viewBox="0 0 100 10" width="160" height="14" preserveAspectRatio="none"><rect x="0" y="0" height="10" width="%s" fill="%s"></rect></svg></td></tr>
`, b.Label, b.Label, b.Count, b.Label, b.Count, total, b.W, b.Fill)
	}
	if withTotal {
		w.printf("<tr><th scope=\"row\">All devices</th><td class=\"count\" id=\"total\">%d</td><td></td></tr>\n", total)
	}
	w.WriteString("</tbody>\n</table>\n</div>\n")
}

// device is a row of the devices that need attention.
func (w *pageWriter) device(dv remediate.DeviceResult) {
	w.WriteString(`<tr class="device"><td>`)
	if dv.DeviceName != "" {
		w.printf("%s<br>", dv.DeviceName)
	}
	w.printf("<code>%s</code></td><td>%s", dv.DeviceID, string(dv.Outcome))
	if f := dv.FollowUp; f != nil {
		w.printf(", script %s", f.State)
	}
	w.printf("</td><td>%s</td><td>%s", dv.Reason, dv.Message)
	if f := dv.FollowUp; f != nil && f.Error != "" {
		w.printf("<br>Script: %s", f.Error)
	}
	w.WriteString("</td></tr>\n")
}
