package dex_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/gatehouse-proxy/gatehouse/test/dex"
)

// TestLoginReturnsGroups proves the harness: a real Dex, a browser login
// through its form, a code exchange, and an ID token whose groups claim
// comes from the static password entry.
func TestLoginReturnsGroups(t *testing.T) {
	const redirect = "https://app.test/callback"
	d := dex.Start(t, dex.Options{RedirectURIs: []string{redirect}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	p, err := oidc.NewProvider(ctx, d.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	cl := d.Client(dex.ConfidentialClient)
	conf := oauth2.Config{ClientID: cl.ID, ClientSecret: cl.Secret, Endpoint: p.Endpoint(), RedirectURL: redirect,
		Scopes: []string{oidc.ScopeOpenID, "email", "groups", oidc.ScopeOfflineAccess}}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("state-1", oauth2.S256ChallengeOption(verifier), oidc.Nonce("nonce-1"))

	alice := d.User("alice")
	if _, err := d.NewBrowser().Login(ctx, authURL, alice.Email, "wrong"); !errors.Is(err, dex.ErrInvalidCredentials) {
		t.Fatalf("wrong password: err = %v, want ErrInvalidCredentials", err)
	}
	back, err := d.NewBrowser().Login(ctx, authURL, alice.Email, alice.Password)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Query().Get("state"); got != "state-1" {
		t.Fatalf("state = %q", got)
	}
	tok, err := conf.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		t.Error("no refresh token despite offline_access")
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := p.Verifier(&oidc.Config{ClientID: cl.ID}).Verify(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Email  string   `json:"email"`
		Groups []string `json:"groups"`
	}
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if idt.Nonce != "nonce-1" || claims.Email != alice.Email || !slices.Equal(claims.Groups, alice.Groups) {
		t.Fatalf("claims = %+v nonce %q", claims, idt.Nonce)
	}

	// A restart forgets the signing keys: a new login is signed by a new key.
	d.Restart()
	back, err = d.NewBrowser().Login(ctx, authURL, alice.Email, alice.Password)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conf.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier)); err != nil {
		t.Fatalf("exchange after restart: %v", err)
	}
	d.Stop()
	if _, err := d.NewBrowser().Login(ctx, authURL, alice.Email, alice.Password); err == nil {
		t.Fatal("login against a stopped Dex succeeded")
	}
}
