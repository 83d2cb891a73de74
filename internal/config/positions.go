package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Pos is a location in a YAML document.
type Pos struct{ Line, Col int }

// Positions maps dotted field paths ("mesh.routes[2].service") to where
// their values stand in the file. Validation works on decoded structs and
// names fields by path; Positions turns those paths back into lines.
type Positions map[string]Pos

func indexPositions(root *yaml.Node) Positions {
	p := Positions{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n == nil {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
			return
		case yaml.AliasNode:
			walk(n.Alias, path)
			return
		}
		if path != "" {
			if _, seen := p[path]; !seen {
				p[path] = Pos{n.Line, n.Column}
			}
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				child := k.Value
				if path != "" {
					child = path + "." + k.Value
				}
				// A key's own line is the better anchor for "field X is wrong".
				p[child] = Pos{k.Line, k.Column}
				walk(v, child)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(root, "")
	return p
}

// Lookup returns the position of path, or of its nearest ancestor that
// appears in the file (a missing required field is reported where its parent
// is).
func (p Positions) Lookup(path string) Pos {
	for path != "" {
		if pos, ok := p[path]; ok {
			return pos
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return Pos{}
}
