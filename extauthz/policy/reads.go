package policy

import (
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// reads is the part of the input document a compiled policy can observe, as
// a tree of object keys. Building a whole opa-envoy-plugin input (the
// CheckRequest in protojson form, ~1 KB of headers, path, query, body) cost
// more than evaluating a typical policy, and most policies read a handful of
// fields; BuildInput builds only what a policy can reach.
//
// The analysis is conservative: every reference to input in any rule or
// function of the compiled modules (reachable or not) counts, and a
// reference is kept up to its first key that is not a constant string —
// input.attributes.request.http.headers[name] needs all headers,
// input.parsed_path[0] all of parsed_path, a bare input everything. So a
// policy sees exactly the value it would have seen in the whole document
// (TestPrunedInputDecidesAlike holds the two together).
type reads struct {
	all  bool              // the whole subtree below this key
	keys map[string]*reads // otherwise only these keys, nil: none
	// sorted are the keys in order, set by freeze once the tree is built;
	// the tree is read-only from then on and shared by every request.
	sorted []string
}

// readsAll is the tree of a policy that reads the whole input.
var readsAll = &reads{all: true}

// child is what is needed below key k: nil if nothing.
func (r *reads) child(k string) *reads {
	switch {
	case r == nil:
		return nil
	case r.all:
		return r
	}
	return r.keys[k]
}

// freeze sorts every level's keys; call it once the tree is complete.
func (r *reads) freeze() *reads {
	r.sorted = slices.Sorted(maps.Keys(r.keys))
	for _, c := range r.keys {
		c.freeze()
	}
	return r
}

// sortedKeys are the keys below r in order (none when r.all).
func (r *reads) sortedKeys() []string { return r.sorted }

// capacity is how many keys an object holding n keys keeps under r.
func (r *reads) capacity(n int) int {
	if r.all {
		return n
	}
	return min(n, len(r.keys))
}

// at is what is needed below path: nil if nothing.
func (r *reads) at(path []string) *reads {
	for _, k := range path {
		if r = r.child(k); r == nil {
			return nil
		}
	}
	return r
}

// has reports whether anything below key k is needed.
func (r *reads) has(k string) bool { return r.child(k) != nil }

// add marks path (object keys from the root) as needed whole.
func (r *reads) add(path []string) {
	n := r
	for _, k := range path {
		if n.all {
			return
		}
		if n.keys == nil {
			n.keys = map[string]*reads{}
		}
		c := n.keys[k]
		if c == nil {
			c = &reads{}
			n.keys[k] = c
		}
		n = c
	}
	n.all, n.keys = true, nil
}

// paths lists the needed subtrees as dotted paths ("input" for all), for
// status pages.
func (r *reads) paths() []string {
	var out []string
	var walk func(n *reads, prefix string)
	walk = func(n *reads, prefix string) {
		if n.all {
			out = append(out, prefix)
			return
		}
		for k, c := range n.keys {
			walk(c, prefix+"."+k)
		}
	}
	walk(r, "input")
	slices.Sort(out)
	return out
}

// policyReads finds what the compiled policy and the query can read of
// input. Imports are skipped: the compiler has already resolved them into
// the rules' references.
func policyReads(c *ast.Compiler, query ast.Body) *reads {
	root := &reads{}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		if root.all {
			return true
		}
		switch v := x.(type) {
		case *ast.Term:
			if ref, ok := v.Value.(ast.Ref); ok {
				visitRef(root, vis, ref)
				return true
			}
		case ast.Ref:
			visitRef(root, vis, v)
			return true
		case ast.Var:
			// A bare input (x := input, walk(input), f(input)) reads it all.
			if v.Equal(ast.InputRootDocument.Value) {
				root.all = true
			}
		}
		return false
	})
	for _, m := range c.Modules {
		for _, rule := range m.Rules {
			vis.Walk(rule)
		}
	}
	vis.Walk(query)
	if root.all {
		return readsAll
	}
	return root.freeze()
}

// visitRef records an input reference up to its first non-constant key and
// walks the rest of it, which may hold further references.
func visitRef(root *reads, vis *ast.GenericVisitor, ref ast.Ref) {
	if len(ref) == 0 {
		return
	}
	if ref.HasPrefix(ast.InputRootRef) {
		var path []string
		for _, t := range ref[1:] {
			s, ok := t.Value.(ast.String)
			if !ok {
				break
			}
			path = append(path, string(s))
		}
		root.add(path)
	} else {
		vis.Walk(ref[0])
	}
	for _, t := range ref[1:] {
		vis.Walk(t)
	}
}

// deterministic reports whether every evaluation of the compiled policy on
// equal input gives an equal result: no builtin that reads the clock, the
// network, randomness or the environment (OPA marks them
// Nondeterministic), and no print(), whose output a cached decision would
// swallow; nor one of readsClock. The reason names the first offending
// call.
func deterministic(c *ast.Compiler) (bool, string) {
	var why string
	check := func(op ast.Ref) {
		if why != "" {
			return
		}
		name := op.String()
		if name == "print" || name == "internal.print" {
			why = "policy calls print()"
			return
		}
		if b, ok := ast.BuiltinMap[name]; ok && b.Nondeterministic || slices.Contains(readsClock, name) {
			why = "policy calls " + name + ", which is not deterministic"
		}
	}
	for _, m := range c.Modules {
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if e.IsCall() {
				check(e.Operator())
			}
			return why != ""
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			switch v := t.Value.(type) {
			case ast.Call:
				if len(v) > 0 {
					if op, ok := v[0].Value.(ast.Ref); ok {
						check(op)
					}
				}
			case ast.Ref:
				// A builtin named without a call: the replacement in a
				// `with f as uuid.rfc4122` mock is called all the same.
				check(v)
			}
			return why != ""
		})
	}
	return why == "", why
}

// readsClock are builtins OPA does not mark nondeterministic that still
// read the current time when the policy passes none: a cached decision on a
// token or certificate would outlive its expiry.
var readsClock = []string{
	"io.jwt.decode_verify",
	"crypto.x509.parse_and_verify_certificates",
	"crypto.x509.parse_and_verify_certificates_with_options",
}

// perRequest are input paths that differ on every request (Envoy's request
// id and time); a policy reading them gains nothing from a decision cache.
var perRequest = [][]string{
	{"attributes", "request", "http", "id"},
	{"attributes", "request", "time"},
	{"attributes", "request", "http", "headers", "x-request-id"},
}

// cacheable reports whether decisions on inputs pruned to r can be reused:
// the policy must not read a per-request value, nor whole header sets or
// bodies, which are nearly unique per request and large.
func (r *reads) cacheable() (bool, string) {
	if r.all {
		return false, "policy reads the whole input"
	}
	big := [][]string{
		{"attributes"}, {"attributes", "request"}, {"attributes", "request", "http"},
		{"attributes", "request", "http", "headers"}, {"attributes", "request", "http", "body"},
		{"attributes", "request", "http", "rawBody"}, {"parsed_body"},
	}
	for _, p := range big {
		if n := r.at(p); n != nil && n.all {
			return false, "policy reads all of input." + strings.Join(p, ".")
		}
	}
	for _, p := range perRequest {
		if r.at(p) != nil {
			return false, "policy reads input." + strings.Join(p, ".")
		}
	}
	return true, ""
}
