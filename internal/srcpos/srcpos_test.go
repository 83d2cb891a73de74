package srcpos

import "testing"

func TestMessage(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		line, col int
		what, msg string
		want      string
	}{
		{"file only", "gatehouse.yaml", 0, 0, "", "empty file", "gatehouse.yaml: empty file"},
		{"line", "gatehouse.yaml", 12, 0, "mesh.routes[2].service", "unknown service", "gatehouse.yaml:12: mesh.routes[2].service: unknown service"},
		{"line and column", "policies/authz.rego", 3, 7, "rego_parse_error", "unexpected }", "policies/authz.rego:3:7: rego_parse_error: unexpected }"},
		{"column without line is dropped", "a.rego", 0, 4, "", "x", "a.rego: x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Message(tt.file, tt.line, tt.col, tt.what, tt.msg); got != tt.want {
				t.Errorf("Message() = %q, want %q", got, tt.want)
			}
		})
	}
}
