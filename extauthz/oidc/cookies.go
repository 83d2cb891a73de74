package oidc

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Cookie bounds. Browsers keep about 4096 bytes per cookie, name and
// attributes included; a header larger than maxCookieHeader is not read.
const (
	maxChunk        = 3800
	maxCookieHeader = 64 << 10
)

// cookieJar is the request's cookies, parsed once.
type cookieJar map[string]string

// parseCookies reads a Cookie header as Envoy forwards it (several headers
// joined with "; "). Malformed pairs are skipped; the first value of a name
// wins. The __Host- prefix means no other site or sub-domain could have set
// ours, so there is no need to guess between duplicates.
func parseCookies(header string) cookieJar {
	jar := cookieJar{}
	if len(header) > maxCookieHeader {
		return jar
	}
	for part := range strings.SplitSeq(header, ";") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" {
			continue
		}
		if _, seen := jar[name]; !seen {
			jar[name] = strings.Trim(value, `"`)
		}
	}
	return jar
}

// setCookie is a Set-Cookie value with the attributes every Gatehouse cookie
// has: the __Host- prefix demands Secure, Path=/ and no Domain; HttpOnly keeps
// scripts out; Lax still sends it on the IdP's top-level redirect back.
func setCookie(name, value string, maxAge time.Duration) string {
	c := http.Cookie{
		Name: name, Value: value, Path: "/",
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode,
		MaxAge: int(maxAge / time.Second),
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 1
	}
	return c.String()
}

// clearCookie expires a cookie now.
func clearCookie(name string) string {
	c := http.Cookie{Name: name, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1}
	return c.String()
}

// chunkName is the name of the i-th part of a session too large for one cookie.
func chunkName(base string, i int) string { return base + "." + strconv.Itoa(i) }

// readChunked returns the value stored under base, whole or in chunks.
func (j cookieJar) readChunked(base string, maxChunks int) (string, bool) {
	if v, ok := j[base]; ok {
		return v, true
	}
	var b strings.Builder
	for i := range maxChunks {
		v, ok := j[chunkName(base, i)]
		if !ok {
			break
		}
		b.WriteString(v)
	}
	return b.String(), b.Len() > 0
}

// writeChunked returns the Set-Cookie values that store value under base,
// expiring any cookie of the previous layout the request still carries.
// ok is false when value needs more than maxChunks cookies.
func (j cookieJar) writeChunked(base, value string, maxAge time.Duration, maxChunks int) (set []string, ok bool) {
	keep := map[string]bool{}
	if len(value) <= maxChunk {
		set = append(set, setCookie(base, value, maxAge))
		keep[base] = true
	} else {
		n := (len(value) + maxChunk - 1) / maxChunk
		if n > maxChunks {
			return nil, false
		}
		for i := range n {
			part := value[i*maxChunk : min(len(value), (i+1)*maxChunk)]
			set = append(set, setCookie(chunkName(base, i), part, maxAge))
			keep[chunkName(base, i)] = true
		}
	}
	return append(set, j.clearChunked(base, maxChunks, keep)...), true
}

// clearChunked expires every cookie of base the request carries, except keep.
func (j cookieJar) clearChunked(base string, maxChunks int, keep map[string]bool) []string {
	var out []string
	names := []string{base}
	for i := range maxChunks {
		names = append(names, chunkName(base, i))
	}
	for _, n := range names {
		if _, present := j[n]; present && !keep[n] {
			out = append(out, clearCookie(n))
		}
	}
	return out
}

// UpstreamCookie returns the Cookie header to send upstream: the request's
// without Gatehouse's own cookies (sessions and logins are ours alone).
// changed is false when there was nothing to remove.
func (f *Flow) UpstreamCookie(header string) (cookie string, changed bool) {
	if !strings.Contains(header, f.cfg.CookiePrefix) {
		return header, false
	}
	var kept []string
	for part := range strings.SplitSeq(header, ";") {
		p := strings.TrimSpace(part)
		if p == "" {
			continue
		}
		name, _, _ := strings.Cut(p, "=")
		if strings.HasPrefix(name, f.cfg.CookiePrefix+"-") {
			changed = true
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, "; "), changed
}
