package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()

	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "healthy", args: []string{srv.URL + "/healthz"}},
		{name: "unhealthy", args: []string{srv.URL + "/readyz"}, wantErr: "status 503"},
		{name: "down", args: []string{down.URL + "/healthz"}, wantErr: "GET "},
		{name: "no url", args: nil, wantErr: "usage"},
		{name: "two urls", args: []string{"a", "b"}, wantErr: "usage"},
		{name: "bad url", args: []string{"://x"}, wantErr: "request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := probe(context.Background(), tt.args, srv.Client())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
