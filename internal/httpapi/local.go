package httpapi

import (
	"mime"
	"net"
	"net/http"
	"strings"

	"github.com/remediator/remediator/internal/fault"
)

// Local guards the API served on a loopback address (serve, demo) against
// the web pages its operator visits: a page may send a request to
// 127.0.0.1 (a POST with a text/plain body needs no preflight), and with
// DNS rebinding under a name of its own. So a request is refused unless
//   - its Host is the loopback address it was sent to, or localhost, on the
//     port listened on (a rebound name never is);
//   - it carries no Origin, or one of those same hosts (a browser sets
//     Origin on every cross-origin POST);
//   - a POST's body is declared application/json (which no form and no
//     simple request can send), or is a form from one of its own pages
//     (Origin one of those hosts; the page's cancel and resume buttons).
func Local(next http.Handler, listen string) http.Handler {
	_, port, _ := net.SplitHostPort(listen)
	local := func(hostport string) bool {
		h, p, err := net.SplitHostPort(hostport)
		if err != nil || p != port {
			return false
		}
		ip := net.ParseIP(strings.Trim(h, "[]"))
		return strings.EqualFold(h, "localhost") || (ip != nil && ip.IsLoopback())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !local(r.Host) {
			write(w, ErrorAnswer(fault.NotLocal, "this server answers requests to its loopback address only (Host "+listen+" or localhost)"))
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			host, ok := strings.CutPrefix(o, "http://")
			if !ok || !local(host) {
				write(w, ErrorAnswer(fault.NotLocal, "requests from web pages are refused (Origin)"))
				return
			}
		}
		if r.Method == http.MethodPost {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			// A form is accepted only from this server's own pages (their
			// Origin, checked above; the form carries the page's token).
			page := mt == "application/x-www-form-urlencoded" && r.Header.Get("Origin") != ""
			if err != nil || mt != "application/json" && !page {
				ans := ErrorAnswer(fault.UnsupportedMediaType, "the body must be sent as Content-Type: application/json")
				write(w, ans)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
