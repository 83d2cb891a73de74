package main

import "testing"

// `gatehouse bootstrap` without --xds dials listen.xds; a listener on every
// interface is reached on loopback (":18000" is the default and was refused
// as an address).
func TestDialAddress(t *testing.T) {
	for in, want := range map[string]string{
		":18000":              "127.0.0.1:18000",
		"0.0.0.0:18000":       "127.0.0.1:18000",
		"[::]:18000":          "127.0.0.1:18000",
		"127.0.0.1:18000":     "127.0.0.1:18000",
		"10.0.0.7:18000":      "10.0.0.7:18000",
		"gatehouse-xds:18000": "gatehouse-xds:18000",
		"[::1]:18000":         "[::1]:18000",
		"no-port":             "no-port",
	} {
		if got := dialAddress(in, "127.0.0.1"); got != want {
			t.Errorf("dialAddress(%q) = %q, want %q", in, got, want)
		}
	}
}
