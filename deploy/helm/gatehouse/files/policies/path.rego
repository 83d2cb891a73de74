# Request method and path as the other rules may trust them.
#
# Envoy sends the path as the client wrote it unless the listener's
# HttpConnectionManager sets normalize_path: true, merge_slashes: true and
# path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT (or REJECT_REQUEST);
# turn those on. These rules are the second line of defence: rather than
# normalising, they refuse to match any path an upstream might read
# differently from us, so such a request is denied by default.
package envoy.authz

method := input.attributes.request.http.method

# segments is input.parsed_path (already percent-decoded and split on "/",
# query string removed), defined only when every segment is canonical.
segments := input.parsed_path if {
	count(input.parsed_path) > 0
	every seg in input.parsed_path {
		clean_segment(seg)
	}
}

# A canonical segment is non-empty (so no "//" or trailing "/"), is not "."
# or "..", and uses only RFC 3986 unreserved characters and sub-delims
# other than ";". That excludes ";" path parameters ("..;/"), "\" (a
# separator to some servers), "%" left over after decoding (double
# encoding such as %252e), control characters and "#". Case is kept and
# compared exactly, so "/Admin" never matches a rule written for "admin".
clean_segment(seg) if {
	regex.match(`^[A-Za-z0-9._~!$&'()*+,=:@-]+$`, seg)
	not seg in {".", ".."}
}

# path_under(prefix) holds when the canonical path is prefix or lies below it.
path_under(prefix) if array.slice(segments, 0, count(prefix)) == prefix

# method_in(methods) holds when the method is listed or "*" is.
method_in(methods) if method in methods

method_in(methods) if "*" in methods
