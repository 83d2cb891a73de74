// Package srcpos writes the one message shape every "bad input" error in
// Gatehouse uses — file:line:col: what: message — so editors, CI logs and
// operators can jump straight to the place, whichever file was wrong.
package srcpos

import (
	"strconv"
	"strings"
)

// Message returns "file[:line[:col]]: [what: ]msg". line and col are
// 1-based; 0 means unknown (and a column without a line is not shown).
// what names the field or rule code at fault and may be empty.
func Message(file string, line, col int, what, msg string) string {
	var b strings.Builder
	b.Grow(len(file) + len(what) + len(msg) + 16)
	b.WriteString(file)
	if line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(line))
		if col > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(col))
		}
	}
	b.WriteString(": ")
	if what != "" {
		b.WriteString(what)
		b.WriteString(": ")
	}
	b.WriteString(msg)
	return b.String()
}
