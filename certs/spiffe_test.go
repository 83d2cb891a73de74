package certs_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/certs"
)

func TestParseSPIFFEID(t *testing.T) {
	tests := []struct {
		id       string
		wantTD   string
		wantPath string
		wantErr  string
	}{
		{id: "spiffe://gatehouse.local/proxy/edge", wantTD: "gatehouse.local", wantPath: "/proxy/edge"},
		{id: "spiffe://example.org", wantTD: "example.org"},
		{id: "spiffe://a_b-c.9/Seg.Ment-_x", wantTD: "a_b-c.9", wantPath: "/Seg.Ment-_x"},
		{id: "spiffe://td/a/b/c/d", wantTD: "td", wantPath: "/a/b/c/d"},
		{id: "", wantErr: "empty"},
		{id: "http://gatehouse.local/x", wantErr: "scheme"},
		{id: "SPIFFE://gatehouse.local/x", wantErr: "lower case"},
		{id: "spiffe:/gatehouse.local/x", wantErr: "scheme"},
		{id: "spiffe://Gatehouse.local/x", wantErr: "upper-case"},
		{id: "spiffe:///x", wantErr: "trust domain is empty"},
		{id: "spiffe://gatehouse.local:8443/x", wantErr: "port"},
		{id: "spiffe://user@gatehouse.local/x", wantErr: "userinfo"},
		{id: "spiffe://gatehouse.local/x?y=1", wantErr: "query"},
		{id: "spiffe://gatehouse.local/x#frag", wantErr: "fragment"},
		{id: "spiffe://gatehouse.local/", wantErr: "trailing slash"},
		{id: "spiffe://gatehouse.local/x/", wantErr: "trailing slash"},
		{id: "spiffe://gatehouse.local//x", wantErr: "empty path segment"},
		{id: "spiffe://gatehouse.local/./x", wantErr: `"."`},
		{id: "spiffe://gatehouse.local/x/..", wantErr: `".."`},
		{id: "spiffe://gatehouse.local/x%20y", wantErr: "not allowed"},
		{id: "spiffe://gatehouse.local/x y", wantErr: "not allowed"},
		{id: "spiffe://gatehouse.local/" + strings.Repeat("a", 2048), wantErr: "longer than 2048"},
		{id: "spiffe://" + strings.Repeat("a", 256) + "/x", wantErr: "longer than 255"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			td, path, err := certs.ParseSPIFFEID(tt.id)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSPIFFEID(%q) error = %v, want containing %q", tt.id, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSPIFFEID(%q): %v", tt.id, err)
			}
			if td != tt.wantTD || path != tt.wantPath {
				t.Fatalf("ParseSPIFFEID(%q) = %q, %q; want %q, %q", tt.id, td, path, tt.wantTD, tt.wantPath)
			}
		})
	}
}

func TestValidateWorkloadIDAndMake(t *testing.T) {
	tests := []struct {
		name    string
		id, td  string
		wantErr string
	}{
		{name: "ok", id: "spiffe://gatehouse.local/proxy/edge", td: "gatehouse.local"},
		{name: "any domain", id: "spiffe://other.org/svc", td: ""},
		{name: "trust domain only", id: "spiffe://gatehouse.local", td: "gatehouse.local", wantErr: "not a workload"},
		{name: "foreign domain", id: "spiffe://evil.local/proxy/edge", td: "gatehouse.local", wantErr: "outside trust domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := certs.ValidateWorkloadID(tt.id, tt.td)
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("ValidateWorkloadID(%q, %q) = %v, want %q", tt.id, tt.td, err, tt.wantErr)
			}
		})
	}
	id, err := certs.MakeSPIFFEID("gatehouse.local", "proxy", "edge-1")
	if err != nil || id != "spiffe://gatehouse.local/proxy/edge-1" {
		t.Fatalf("MakeSPIFFEID = %q, %v", id, err)
	}
	for _, bad := range [][3]string{{"gatehouse.local", "", "x"}, {"gatehouse.local", "proxy", ".."}, {"gatehouse.local", "a/b", ""}, {"GH", "a", "b"}} {
		if id, err := certs.MakeSPIFFEID(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("MakeSPIFFEID(%q) = %q, want error", bad, id)
		}
	}
}
