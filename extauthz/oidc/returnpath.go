package oidc

import (
	"net/url"
	"strings"
)

// maxReturnPath bounds the path kept in the login cookie.
const maxReturnPath = 2048

// safeReturnPath reports whether p may be sent back as a Location after
// login: a same-origin relative path. Anything a browser could read as
// another origin is refused — "//host", "/\host", absolute URLs, control
// characters, and the same tricks percent-encoded (once or several times).
// The caller falls back to "/".
func safeReturnPath(p string) (string, bool) {
	if p == "" || len(p) > maxReturnPath || p[0] != '/' {
		return "", false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return "", false
		}
	}
	pathPart, _, _ := strings.Cut(p, "?")
	pathPart, _, _ = strings.Cut(pathPart, "#")
	decoded, settled := pathPart, false
	for range 4 { // %252F → %2F → /
		if strings.Contains(decoded, "//") || strings.Contains(decoded, `\`) || strings.Contains(decoded, "/./") || strings.Contains(decoded, "/../") {
			return "", false
		}
		next, err := url.PathUnescape(decoded)
		if err != nil {
			return "", false
		}
		for i := 0; i < len(next); i++ {
			if c := next[i]; c < ' ' || c == 0x7f {
				return "", false
			}
		}
		if next == decoded {
			settled = true
			break
		}
		decoded = next
	}
	if !settled {
		return "", false // still encoded after four rounds: nobody writes paths like that
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "", false
	}
	return p, true
}
