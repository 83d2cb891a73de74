package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
)

func caSubcommands() []command {
	return []command{
		{"init", "create a new local CA in a directory", runCAInit},
		{"issue", "issue a SPIFFE leaf certificate and key from the CA", runCAIssue},
		{"inspect", "summarise the certificates in PEM files", runCAInspect},
		{"rotate", "replace the CA, keeping the old one trusted for an overlap window", runCARotate},
	}
}

// runCA implements "gatehouse ca". Exit codes: 0 success, 1 the operation
// failed, 2 the command line was wrong.
func runCA(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return dispatch(ctx, "gatehouse ca", caSubcommands(), args, stdout, stderr)
}

func cliLogger(stderr io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func runCAInit(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newCAFlags("init", "--dir DIR [--trust-domain TD] [--force]",
		"Creates a CA: DIR/ca.crt (0644) and DIR/ca.key (0600, PKCS#8) in DIR (created 0700).\n"+
			"Refuses to replace an existing CA unless --force is given; --force also\n"+
			"drops every previously trusted CA, so use 'ca rotate' for routine changes.", stderr)
	dir := fs.String("dir", "", "CA directory (required)")
	td := fs.String("trust-domain", certs.DefaultTrustDomain, "SPIFFE trust domain: lower-case [a-z0-9.-_]")
	force := fs.Bool("force", false, "replace an existing CA in DIR")
	keyType := fs.String("key-type", string(certs.ECDSAP256), "CA key: ecdsa-p256, ecdsa-p384 or rsa-3072")
	validity := fs.Duration("validity", certs.DefaultCAValidity, "how long the CA certificate is valid")
	nc := fs.Bool("name-constraints", true, "limit the CA to URI SANs in its trust domain (critical name constraint)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	if *dir == "" {
		return usageError(fs, "--dir is required")
	}
	alg, err := certs.ParseKeyAlgorithm(*keyType)
	if err != nil {
		return usageError(fs, "--key-type: %v", err)
	}
	opts := []certs.Option{
		certs.WithTrustDomain(*td), certs.WithKeyAlgorithm(alg), certs.WithCAValidity(*validity),
		certs.WithNameConstraints(*nc), certs.WithLogger(cliLogger(stderr)),
	}
	if *force {
		opts = append(opts, certs.WithForce())
	}
	ca, err := certs.Init(*dir, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse ca init: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Created CA for trust domain %s in %s\n", ca.TrustDomain(), *dir)
	return printCerts(stdout, ca.CertPEM())
}

// listFlag collects a repeatable, comma-separable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func runCAIssue(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newCAFlags("issue", "--dir DIR (--spiffe-id ID | --role R --name N) --out PREFIX [--dns NAME]... [--ttl 24h]",
		"Issues a leaf certificate with a fresh key, signed by the CA in DIR, and writes\n"+
			"PREFIX.crt (0644) and PREFIX.key (0600). The identity is either a full SPIFFE ID\n"+
			"in the CA's trust domain or spiffe://<trust-domain>/<role>/<name>.", stderr)
	dir := fs.String("dir", "", "CA directory (required)")
	id := fs.String("spiffe-id", "", "SPIFFE ID, e.g. spiffe://gatehouse.local/proxy/edge")
	role := fs.String("role", "", "role path segment (with --name, instead of --spiffe-id)")
	name := fs.String("name", "", "name path segment (with --role)")
	var dns listFlag
	fs.Var(&dns, "dns", "DNS SAN to add; repeat or separate with commas")
	ttl := fs.Duration("ttl", certs.DefaultLeafTTL, fmt.Sprintf("certificate lifetime (%s to %s)", certs.MinLeafTTL, certs.MaxLeafTTL))
	out := fs.String("out", "", "output prefix: writes PREFIX.crt and PREFIX.key (required)")
	keyType := fs.String("key-type", string(certs.ECDSAP256), "leaf key: ecdsa-p256, ecdsa-p384 or rsa-3072")
	bundleOut := fs.String("bundle-out", "", "also write the CA trust bundle (current and overlapping CAs) to this file")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *dir == "":
		return usageError(fs, "--dir is required")
	case *out == "":
		return usageError(fs, "--out is required")
	case *id != "" && (*role != "" || *name != ""):
		return usageError(fs, "give either --spiffe-id or --role and --name, not both")
	case *id == "" && (*role == "" || *name == ""):
		return usageError(fs, "give --spiffe-id, or both --role and --name")
	}
	alg, err := certs.ParseKeyAlgorithm(*keyType)
	if err != nil {
		return usageError(fs, "--key-type: %v", err)
	}
	ca, err := certs.Load(*dir, certs.WithLogger(cliLogger(stderr)))
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse ca issue: %v\n", err)
		return 1
	}
	opts := []certs.IssueOption{certs.WithTTL(*ttl), certs.WithDNSNames(dns...), certs.WithLeafKeyAlgorithm(alg)}
	var leaf *certs.Leaf
	if *id != "" {
		leaf, err = ca.Issue(*id, opts...)
	} else {
		leaf, err = ca.IssueRole(*role, *name, opts...)
	}
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse ca issue: %v\n", err)
		return 1
	}
	if err := certs.WriteLeaf(*out, leaf); err != nil {
		fmt.Fprintf(stderr, "gatehouse ca issue: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Wrote %s.crt and %s.key for %s\n", *out, *out, leaf.SPIFFEID)
	if *bundleOut != "" {
		if err := os.WriteFile(*bundleOut, ca.TrustBundle(), 0o644); err != nil {
			fmt.Fprintf(stderr, "gatehouse ca issue: trust bundle: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "Wrote trust bundle %s\n", *bundleOut)
	}
	return printCerts(stdout, leaf.CertPEM)
}

func runCAInspect(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newCAFlags("inspect", "[--json] FILE...",
		"Prints subject, issuer, serial, SANs, validity, CA flag and SHA-256 fingerprint of\n"+
			"every certificate in each PEM file. Private keys in the files are skipped, never\n"+
			"printed. Exits 1 if any file cannot be read or is not complete PEM.", stderr)
	asJSON := fs.Bool("json", false, "print a JSON object per file instead of text")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		return usageError(fs, "no files given")
	}
	code := 0
	for _, file := range fs.Args() {
		data, err := readLimited(file)
		var infos []certs.CertInfo
		if err == nil {
			infos, err = certs.Inspect(data)
		}
		if err != nil {
			fmt.Fprintf(stderr, "gatehouse ca inspect: %s: %v\n", file, err)
			code = 1
			continue
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(struct {
				File         string           `json:"file"`
				Certificates []certs.CertInfo `json:"certificates"`
			}{file, infos}); err != nil {
				fmt.Fprintf(stderr, "gatehouse ca inspect: %v\n", err)
				return 1
			}
			continue
		}
		fmt.Fprintf(stdout, "%s:\n", file)
		writeInfos(stdout, infos)
	}
	return code
}

func runCARotate(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newCAFlags("rotate", "--dir DIR [--overlap 24h]",
		"Creates a new CA in DIR with the same trust domain. The old certificate moves to\n"+
			"DIR/previous/<serial>.crt and stays in the trust bundle until the overlap ends;\n"+
			"its key is deleted, new leaves come from the new CA only. Make the overlap at\n"+
			"least the longest leaf TTL so every old leaf is replaced before it stops verifying.", stderr)
	dir := fs.String("dir", "", "CA directory (required)")
	overlap := fs.Duration("overlap", 24*time.Hour, "how long the old CA stays trusted")
	keyType := fs.String("key-type", "", "new CA key: ecdsa-p256, ecdsa-p384 or rsa-3072 (default: same as the old CA)")
	validity := fs.Duration("validity", certs.DefaultCAValidity, "how long the new CA certificate is valid")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	if *dir == "" {
		return usageError(fs, "--dir is required")
	}
	if *overlap < 0 {
		return usageError(fs, "--overlap must not be negative")
	}
	opts := []certs.Option{certs.WithCAValidity(*validity), certs.WithLogger(cliLogger(stderr))}
	if *keyType != "" {
		alg, err := certs.ParseKeyAlgorithm(*keyType)
		if err != nil {
			return usageError(fs, "--key-type: %v", err)
		}
		opts = append(opts, certs.WithKeyAlgorithm(alg))
	}
	ca, err := certs.Rotate(*dir, *overlap, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse ca rotate: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Rotated CA for trust domain %s in %s\n", ca.TrustDomain(), *dir)
	for _, p := range ca.Previous() {
		fmt.Fprintf(stdout, "Previous CA %x trusted until %s\n", p.Cert.SerialNumber, p.RetireAt.UTC().Format(time.RFC3339))
	}
	return printCerts(stdout, ca.CertPEM())
}

// readLimited reads a file of at most 1 MiB: inspect is for PEM files, and a
// mistaken path must not exhaust memory.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const limit = 1 << 20
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if len(data) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

func printCerts(w io.Writer, pemData []byte) int {
	infos, err := certs.Inspect(pemData)
	if err != nil {
		fmt.Fprintf(w, "(cannot summarise certificate: %v)\n", err)
		return 1
	}
	writeInfos(w, infos)
	return 0
}

func writeInfos(w io.Writer, infos []certs.CertInfo) {
	now := time.Now()
	for i, info := range infos {
		fmt.Fprintf(w, "Certificate %d:\n", i+1)
		info.WriteText(w, now)
	}
}

// newCAFlags is newFlagSet for a `gatehouse ca` subcommand.
func newCAFlags(name, synopsis, description string, stderr io.Writer) *flag.FlagSet {
	return newFlagSet("ca "+name, synopsis, description, stderr)
}
