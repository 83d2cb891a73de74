// Command soak runs `gatehouse serve` under steady ext_authz load while its
// policy is edited and its certificates are rotated, and checks that every
// decision stays right and that memory and goroutines stay bounded.
//
//	go run ./test/soak -duration 10m
//
// It builds the binary (or uses -bin), writes a config and a policy into a
// temporary directory, starts the process on loopback ports and then, until
// -duration has passed:
//
//   - sends Check requests at -rate per second, a fixed mix of requests
//     whose answers are known: "strict" paths, where both policy versions
//     agree, must always get the expected answer; the "flip" path, which
//     version A allows and version B denies, is only counted and reported
//     (around a switch either answer is right);
//   - every -policy-every, replaces the policy file (write to a hidden temp
//     file, rename over) with the other version; every third edit first
//     drops a half-written file in place, which must be refused while the
//     last good version keeps answering;
//   - every -rotate-every, forces a certificate rotation (POST /debug/rotate).
//
// At start (after a warm-up) and at the end it reads go_memstats_heap_inuse_bytes
// and go_goroutines from /metrics. It exits 1 when any strict decision was
// wrong, any Check failed, a rotation or policy edit was not accepted, or
// heap or goroutines grew beyond the bounds set by -max-heap-growth and
// -max-goroutine-growth. It is not part of `make test`.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const spiffeOrders = "spiffe://soak.test/sidecar/orders"

// Two policy versions. They agree on everything but /flip.
const policyTemplate = `package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "public"
	count(input.parsed_path) == 2
}

allow if {
	input.identity.kind == "service"
	input.identity.spiffe_id == "%s"
	input.parsed_path[0] == "api"
}

allow if {
	input.parsed_path == ["flip"]
	%s
}
`

func policyVersion(v string) string {
	cond := "true"
	if v == "B" {
		cond = "false"
	}
	return fmt.Sprintf(policyTemplate, spiffeOrders, cond)
}

const configTemplate = `listen:
  authz: 127.0.0.1:0
  xds: 127.0.0.1:0
  admin: 127.0.0.1:0
log:
  level: info
  format: json
authz:
  timeout: 500ms
  policies:
    dir: %s
mesh:
  trust_domain: soak.test
  authz:
    address: 127.0.0.1:9001
  services:
    - name: web
      endpoints: ["127.0.0.1:8080"]
    - name: orders
      endpoints: ["127.0.0.1:15443"]
      mtls: true
  edges:
    - name: edge
      listen: 127.0.0.1:8443
      tls:
        dns_names: [shop.soak.test]
      routes:
        - path_prefix: /
          service: web
  sidecars:
    - service: orders
`

// kind is one request shape with its expected answer.
type kind struct {
	name   string
	method string
	path   string
	peer   bool      // send the orders sidecar's certificate
	want   code.Code // for strict kinds
	strict bool
}

var kinds = []kind{
	{"public anonymous", "GET", "/public/logo.png", false, code.Code_OK, true},
	{"public with query", "GET", "/public/app.js?v=3", false, code.Code_OK, true},
	{"public POST", "POST", "/public/logo.png", false, code.Code_UNAUTHENTICATED, true},
	{"private anonymous", "GET", "/private/x", false, code.Code_UNAUTHENTICATED, true},
	{"api as orders", "GET", "/api/inventory/1", true, code.Code_OK, true},
	{"api anonymous", "GET", "/api/inventory/1", false, code.Code_UNAUTHENTICATED, true},
	{"admin as orders", "GET", "/admin", true, code.Code_PERMISSION_DENIED, true},
	{"undecodable path", "GET", "/public/%zz", false, code.Code_PERMISSION_DENIED, true}, // input error: 403 even when anonymous
	{"flip", "GET", "/flip", false, 0, false},
}

type counters struct {
	sent, errors, wrong atomic.Int64
	perKind             []atomic.Int64
	flipAllow, flipDeny atomic.Int64
	dropped             atomic.Int64
	latMu               sync.Mutex
	lat                 []time.Duration
	wrongMu             sync.Mutex
	wrongSamples        []string
}

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long to run the load")
	rate := flag.Int("rate", 500, "Check requests per second")
	workers := flag.Int("workers", 32, "concurrent Check callers")
	policyEvery := flag.Duration("policy-every", 3*time.Second, "interval between policy edits")
	rotateEvery := flag.Duration("rotate-every", 5*time.Second, "interval between forced certificate rotations")
	warmup := flag.Duration("warmup", 10*time.Second, "load before the starting heap and goroutine figures are taken")
	bin := flag.String("bin", "", "gatehouse binary to run (default: go build ./cmd/gatehouse)")
	maxHeapGrowth := flag.Float64("max-heap-growth", 2.0, "fail when end heap_inuse > start × this + 32 MiB")
	maxGoroutineGrowth := flag.Int("max-goroutine-growth", 50, "fail when end goroutines > start + this")
	keep := flag.Bool("keep", false, "keep the temporary directory")
	flag.Parse()
	if err := run(*duration, *rate, *workers, *policyEvery, *rotateEvery, *warmup, *bin, *maxHeapGrowth, *maxGoroutineGrowth, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "soak: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("soak: PASS")
}

func run(duration time.Duration, rate, workers int, policyEvery, rotateEvery, warmup time.Duration, bin string, maxHeapGrowth float64, maxGoroutineGrowth int, keep bool) error {
	dir, err := os.MkdirTemp("", "gatehouse-soak")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("soak: working directory", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if bin == "" {
		bin = filepath.Join(dir, "gatehouse")
		build := exec.Command("go", "build", "-o", bin, "github.com/gatehouse-proxy/gatehouse/cmd/gatehouse")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building gatehouse: %w", err)
		}
	}
	policyDir := filepath.Join(dir, "policies")
	if err := os.Mkdir(policyDir, 0o755); err != nil {
		return err
	}
	policyFile := filepath.Join(policyDir, "authz.rego")
	if err := writeAtomic(policyFile, policyVersion("A")); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(configTemplate, policyDir)), 0o644); err != nil {
		return err
	}

	p, err := startGatehouse(bin, dir, cfgPath)
	if err != nil {
		return err
	}
	defer p.stop()
	authzAddr, adminAddr := p.addrs[0], p.addrs[2]
	admin := "http://" + adminAddr
	if err := waitReady(admin, 60*time.Second); err != nil {
		return fmt.Errorf("%w; gatehouse log tail:\n%s", err, p.logTail())
	}
	fmt.Printf("soak: gatehouse pid %d, ext_authz %s, admin %s; %s at %d/s\n", p.cmd.Process.Pid, authzAddr, adminAddr, duration, rate)

	conn, err := grpc.NewClient(authzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	peerPEM, err := peerCertificate(spiffeOrders)
	if err != nil {
		return err
	}
	reqs := make([]*authv3.CheckRequest, len(kinds))
	for i, k := range kinds {
		reqs[i] = checkRequest(k, peerPEM)
	}

	c := &counters{perKind: make([]atomic.Int64, len(kinds))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Load: a pacer hands out request numbers at the rate; workers send.
	jobs := make(chan int, rate)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for n := range jobs {
				i := n % len(kinds)
				send(ctx, client, kinds[i], reqs[i], c, i)
			}
		})
	}
	var pacer sync.WaitGroup
	pacer.Go(func() {
		defer close(jobs)
		interval := time.Second / time.Duration(rate)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		n := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				select {
				case jobs <- n:
				default:
					c.dropped.Add(1)
				}
				n++
			}
		}
	})

	// Background disturbances: policy edits and rotations.
	var bg sync.WaitGroup
	var edits, brokenRefused, rotations, renewed atomic.Int64
	var bgErrMu sync.Mutex
	var bgErrs []error
	bgFail := func(err error) {
		bgErrMu.Lock()
		bgErrs = append(bgErrs, err)
		bgErrMu.Unlock()
	}
	bg.Go(func() {
		tick := time.NewTicker(policyEvery)
		defer tick.Stop()
		version := "A"
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if i%3 == 0 {
				// A half-written save must be refused; the last good
				// version keeps answering meanwhile.
				full := policyVersion(version)
				if err := os.WriteFile(policyFile, []byte(full[:len(full)/2]), 0o644); err != nil {
					bgFail(err)
					continue
				}
				if err := waitPolicyError(ctx, admin, 10*time.Second); err != nil {
					bgFail(fmt.Errorf("half-written policy: %w", err))
				} else {
					brokenRefused.Add(1)
				}
			}
			version = map[string]string{"A": "B", "B": "A"}[version]
			if err := writeAtomic(policyFile, policyVersion(version)); err != nil {
				bgFail(err)
				continue
			}
			edits.Add(1)
		}
	})
	bg.Go(func() {
		tick := time.NewTicker(rotateEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			resp, err := http.Post(admin+"/debug/rotate", "", nil)
			if err != nil {
				bgFail(fmt.Errorf("rotate: %w", err))
				continue
			}
			var body struct {
				Renewing int64 `json:"renewing"`
			}
			decErr := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted || decErr != nil {
				bgFail(fmt.Errorf("rotate: HTTP %d, %v", resp.StatusCode, decErr))
				continue
			}
			rotations.Add(1)
			renewed.Add(body.Renewing)
		}
	})

	// Figures: after warm-up, periodically, and at the end.
	time.Sleep(min(warmup, duration/2))
	start, err := scrape(admin)
	if err != nil {
		return err
	}
	fmt.Printf("soak: start  heap_inuse %s, goroutines %d\n", mib(start.heap), start.goroutines)
	began := time.Now()
	remaining := duration - min(warmup, duration/2)
	report := time.NewTicker(30 * time.Second)
	done := time.After(remaining)
	var samples []figures
loop:
	for {
		select {
		case <-done:
			break loop
		case <-report.C:
			f, err := scrape(admin)
			if err != nil {
				bgFail(err)
				continue
			}
			samples = append(samples, f)
			fmt.Printf("soak: +%-5s heap_inuse %s, goroutines %d, sent %d, wrong %d, errors %d\n",
				time.Since(began).Round(time.Second), mib(f.heap), f.goroutines, c.sent.Load(), c.wrong.Load(), c.errors.Load())
		}
	}
	report.Stop()
	cancel()
	pacer.Wait()
	wg.Wait()
	bg.Wait()
	// Let in-flight work settle before the last figures.
	time.Sleep(2 * time.Second)
	end, err := scrape(admin)
	if err != nil {
		return err
	}
	fmt.Printf("soak: end    heap_inuse %s, goroutines %d\n", mib(end.heap), end.goroutines)

	// Report.
	elapsed := duration
	fmt.Printf("soak: %d Checks in %s (%.0f/s), %d not sent (client behind), %d errors, %d wrong strict decisions\n",
		c.sent.Load(), elapsed, float64(c.sent.Load())/elapsed.Seconds(), c.dropped.Load(), c.errors.Load(), c.wrong.Load())
	for i, k := range kinds {
		fmt.Printf("soak:   %-18s %-22s %8d\n", k.name, k.path, c.perKind[i].Load())
	}
	fmt.Printf("soak: /flip (non-strict): %d allowed, %d denied\n", c.flipAllow.Load(), c.flipDeny.Load())
	fmt.Printf("soak: %d policy edits, %d half-written saves refused, %d rotations (%d certificates renewed)\n",
		edits.Load(), brokenRefused.Load(), rotations.Load(), renewed.Load())
	p50, p99, pmax := percentiles(c)
	fmt.Printf("soak: Check latency p50 %s, p99 %s, max %s (informative)\n", p50, p99, pmax)
	if len(samples) > 0 {
		var hs []string
		for _, s := range samples {
			hs = append(hs, mib(s.heap))
		}
		fmt.Printf("soak: heap_inuse every 30s: %s\n", strings.Join(hs, " "))
	}

	var problems []error
	if n := c.wrong.Load(); n > 0 {
		c.wrongMu.Lock()
		problems = append(problems, fmt.Errorf("%d wrong decisions, e.g. %s", n, strings.Join(c.wrongSamples, "; ")))
		c.wrongMu.Unlock()
	}
	if n := c.errors.Load(); n > 0 {
		problems = append(problems, fmt.Errorf("%d Check calls failed", n))
	}
	if c.sent.Load() == 0 {
		problems = append(problems, errors.New("no Check was sent"))
	}
	if edits.Load() == 0 || rotations.Load() == 0 {
		problems = append(problems, fmt.Errorf("disturbances did not run: %d edits, %d rotations", edits.Load(), rotations.Load()))
	}
	bgErrMu.Lock()
	problems = append(problems, bgErrs...)
	bgErrMu.Unlock()
	if limit := float64(start.heap)*maxHeapGrowth + 32<<20; float64(end.heap) > limit {
		problems = append(problems, fmt.Errorf("heap_inuse grew from %s to %s (limit %s)", mib(start.heap), mib(end.heap), mib(limit)))
	}
	if end.goroutines > start.goroutines+maxGoroutineGrowth {
		problems = append(problems, fmt.Errorf("goroutines grew from %d to %d", start.goroutines, end.goroutines))
	}
	if err := p.alive(); err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w\ngatehouse log tail:\n%s", errors.Join(problems...), p.logTail())
	}
	return nil
}

func send(ctx context.Context, client authv3.AuthorizationClient, k kind, req *authv3.CheckRequest, c *counters, i int) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	t0 := time.Now()
	resp, err := client.Check(cctx, req)
	d := time.Since(t0)
	if ctx.Err() != nil {
		return // shutting down: not counted
	}
	c.sent.Add(1)
	c.perKind[i].Add(1)
	c.latMu.Lock()
	if len(c.lat) < 1<<20 {
		c.lat = append(c.lat, d)
	}
	c.latMu.Unlock()
	if err != nil {
		c.errors.Add(1)
		return
	}
	got := code.Code(resp.GetStatus().GetCode())
	if !k.strict {
		if got == code.Code_OK {
			c.flipAllow.Add(1)
		} else {
			c.flipDeny.Add(1)
		}
		return
	}
	if got != k.want {
		c.wrong.Add(1)
		c.wrongMu.Lock()
		if len(c.wrongSamples) < 5 {
			c.wrongSamples = append(c.wrongSamples, fmt.Sprintf("%s %s: got %v, want %v", k.method, k.path, got, k.want))
		}
		c.wrongMu.Unlock()
	}
}

func percentiles(c *counters) (p50, p99, pmax time.Duration) {
	c.latMu.Lock()
	defer c.latMu.Unlock()
	if len(c.lat) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(c.lat)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}

func checkRequest(k kind, peerPEM string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "shop.soak.test", ":method": k.method, ":path": k.path, ":scheme": "https",
		"user-agent": "soak", "x-request-id": "soak", "x-gatehouse-subject": "forged",
	}
	src := &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}}
	if k.peer {
		src.Certificate, src.Principal = peerPEM, spiffeOrders
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: src,
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: k.method, Path: k.path, Host: "shop.soak.test", Scheme: "https", Protocol: "HTTP/2", Headers: h,
		}},
	}}
}

// peerCertificate is a URL-encoded PEM certificate with one SPIFFE URI SAN,
// as Envoy forwards a validated client certificate.
func peerCertificate(id string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(id)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "orders"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour), URIs: []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	return url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))), nil
}

// writeAtomic saves like an editor that renames a finished temp file over
// the original.
func writeAtomic(path, content string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// --- the process ------------------------------------------------------------

type process struct {
	cmd   *exec.Cmd
	addrs []string // authz, xds, admin
	log   *tailWriter
	exit  chan error
}

var listening = regexp.MustCompile(`on (\S+?),?(?:\s|$)`)

func startGatehouse(bin, dir, cfgPath string) (*process, error) {
	cmd := exec.Command(bin, "serve", "--config", cfgPath, "--state-dir", filepath.Join(dir, "state"))
	cmd.Dir = dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, log: &tailWriter{max: 64 << 10}, exit: make(chan error, 1)}
	cmd.Stderr = p.log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.exit <- cmd.Wait() }()
	addrs := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "gatehouse ") && strings.Contains(line, " on ") {
				var a []string
				for _, m := range listening.FindAllStringSubmatch(line, -1) {
					a = append(a, m[1])
				}
				select {
				case addrs <- a:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addrs:
		if len(a) != 3 {
			p.stop()
			return nil, fmt.Errorf("listening line named %v, want authz, xds and admin", a)
		}
		p.addrs = a
		return p, nil
	case err := <-p.exit:
		return nil, fmt.Errorf("gatehouse exited: %v\n%s", err, p.logTail())
	case <-time.After(60 * time.Second):
		p.stop()
		return nil, fmt.Errorf("gatehouse did not start:\n%s", p.logTail())
	}
}

func (p *process) alive() error {
	select {
	case err := <-p.exit:
		p.exit <- err
		return fmt.Errorf("gatehouse exited during the run: %v", err)
	default:
		return nil
	}
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exit:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exit
	}
}

func (p *process) logTail() string { return p.log.String() }

// tailWriter keeps the last max bytes written (the decision log at 500/s
// is far too much to keep whole).
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *tailWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	if len(w.buf) > w.max {
		w.buf = append([]byte(nil), w.buf[len(w.buf)-w.max:]...)
	}
	return len(b), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := string(w.buf)
	if i := strings.IndexByte(s, '\n'); i >= 0 && len(w.buf) == w.max {
		s = s[i+1:]
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// --- admin endpoint ---------------------------------------------------------

func get(u string) (int, string, error) {
	resp, err := http.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b), err
}

func waitReady(admin string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		code, body, err := get(admin + "/readyz")
		if err == nil && code == http.StatusOK && strings.Contains(body, `"ready":true`) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %d %s %v", within, code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPolicyError waits until /debug/policy reports a reload error.
func waitPolicyError(ctx context.Context, admin string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for ctx.Err() == nil {
		_, body, err := get(admin + "/debug/policy")
		if err == nil {
			var st struct {
				LastError string `json:"last_error"`
			}
			if json.Unmarshal([]byte(body), &st) == nil && st.LastError != "" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no reload error visible at /debug/policy after %s: %s", within, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

type figures struct {
	heap       float64
	goroutines int
}

func scrape(admin string) (figures, error) {
	code, body, err := get(admin + "/metrics")
	if err != nil || code != http.StatusOK {
		return figures{}, fmt.Errorf("/metrics: %d %v", code, err)
	}
	var f figures
	found := 0
	for _, line := range strings.Split(body, "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			f.heap, err = strconv.ParseFloat(val, 64)
			found++
		case "go_goroutines":
			var g float64
			g, err = strconv.ParseFloat(val, 64)
			f.goroutines = int(g)
			found++
		}
		if err != nil {
			return figures{}, fmt.Errorf("/metrics %s: %w", name, err)
		}
	}
	if found != 2 {
		return figures{}, errors.New("/metrics lacks go_memstats_heap_inuse_bytes or go_goroutines")
	}
	return f, nil
}

func mib(b float64) string { return fmt.Sprintf("%.1fMiB", b/(1<<20)) }
