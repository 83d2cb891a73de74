package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/internal/store"
	"github.com/gatehouse-proxy/gatehouse/xds/fleet"
)

// A replica sharing a store never mints a CA; one process alone still
// creates its CA on first start.
func TestOpenCASharedRequiresMountedCA(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name    string
		shared  bool
		wantErr error
	}{
		{"memory: created on first start", false, nil},
		{"redis: refused", true, errSharedCARequired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca")
			_, err := openCA(dir, "e2e.test", tc.shared, log)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			_, statErr := os.Stat(filepath.Join(dir, "ca.key"))
			if created := statErr == nil; created != (tc.wantErr == nil) {
				t.Fatalf("CA created = %v", created)
			}
		})
	}
}

// With the memory store the rotator issues from the CA as before; with
// Redis through the fleet issuer.
func TestLeafIssuerByBackend(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ca, err := openCA(filepath.Join(t.TempDir(), "ca"), "e2e.test", false, log)
	if err != nil {
		t.Fatal(err)
	}
	live := &liveCA{}
	live.ca.Store(ca)
	mem, err := store.New(context.Background(), store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for _, tc := range []struct {
		backend string
		fleet   bool
	}{{"", false}, {store.BackendMemory, false}, {store.BackendRedis, true}} {
		cfg := &config.Config{}
		cfg.Store.Backend = tc.backend
		iss, fl, err := leafIssuer(&process{cfg: cfg, log: log, store: mem}, live)
		if err != nil {
			t.Fatal(err)
		}
		_, isFleet := iss.(*fleet.Issuer)
		if isFleet != tc.fleet || (fl != nil) != tc.fleet {
			t.Errorf("backend %q: fleet issuer = %v, want %v", tc.backend, isFleet, tc.fleet)
		}
		if !tc.fleet && iss != live {
			t.Errorf("backend %q: issuer %T, want the CA", tc.backend, iss)
		}
	}
}
