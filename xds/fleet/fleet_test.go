package fleet_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/certs/certstest"
	"github.com/gatehouse-proxy/gatehouse/internal/store"
	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
	"github.com/gatehouse-proxy/gatehouse/xds/fleet"
)

const id = "spiffe://fleet.test/sidecar/orders"

// countingCA counts the leaves it issues: the fleet must issue once.
type countingCA struct {
	*certs.CA
	n atomic.Int32
}

func (c *countingCA) Issue(id string, opts ...certs.IssueOption) (*certs.Leaf, error) {
	c.n.Add(1)
	return c.CA.Issue(id, opts...)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fixture is a shared CA (as mounted from one Secret) and a Redis.
type fixture struct {
	srv   *redistest.Server
	ca    *countingCA
	clock *certstest.Clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	clock := certstest.NewClock(time.Now())
	ca, err := certs.Init(filepath.Join(t.TempDir(), "ca"), certs.WithTrustDomain("fleet.test"), certs.WithClock(clock), certs.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: redistest.Start(t), ca: &countingCA{CA: ca}, clock: clock}
}

// replica is one gatehouse xds replica's issuer, over its own connection.
func (f *fixture) replica(t *testing.T, opts ...fleet.Option) (*fleet.Issuer, store.Store) {
	t.Helper()
	st, err := store.New(context.Background(), store.Config{Backend: store.BackendRedis, Redis: store.Redis{Address: f.srv.Addr()}}, store.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sealer, err := fleet.SealerFor(f.ca.CA)
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]fleet.Option{fleet.WithLogger(quiet()), fleet.WithClock(f.clock), fleet.WithPoll(50 * time.Millisecond), fleet.WithWait(20 * time.Second)}, opts...)
	return fleet.New(st, f.ca, sealer, opts...), st
}

// issueBoth issues id on every replica at once.
func issueBoth(t *testing.T, reps ...*fleet.Issuer) []*certs.Leaf {
	t.Helper()
	leaves := make([]*certs.Leaf, len(reps))
	errs := make([]error, len(reps))
	var wg sync.WaitGroup
	for i, r := range reps {
		wg.Go(func() { leaves[i], errs[i] = r.Issue(id, certs.WithTTL(time.Hour)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return leaves
}

func TestReplicasServeOneLeafAndRenewOnce(t *testing.T) {
	f := newFixture(t)
	a, _ := f.replica(t)
	b, _ := f.replica(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	adopted := make(chan *certs.Leaf, 16)
	b.Run(ctx, func(_ string, l *certs.Leaf) { adopted <- l })

	first := issueBoth(t, a, b)
	if first[0].Serial != first[1].Serial {
		t.Fatalf("replicas serve serials %s and %s, want one leaf", first[0].Serial, first[1].Serial)
	}
	if n := f.ca.n.Load(); n != 1 {
		t.Fatalf("CA issued %d leaves for one identity, want 1", n)
	}
	// Not due: asked again, both keep it.
	if again := issueBoth(t, b, a); again[0].Serial != first[0].Serial || again[1].Serial != first[0].Serial {
		t.Fatal("a leaf that is not due was replaced")
	}

	// Past RenewAt both rotators ask at once: one issues, both get it.
	f.clock.Set(first[0].RenewAt().Add(time.Second))
	renewed := issueBoth(t, a, b)
	if renewed[0].Serial != renewed[1].Serial || renewed[0].Serial == first[0].Serial {
		t.Fatalf("after RenewAt replicas serve %s and %s (before %s)", renewed[0].Serial, renewed[1].Serial, first[0].Serial)
	}
	if n := f.ca.n.Load(); n != 2 {
		t.Fatalf("CA issued %d leaves, want 2 (one renewal for the fleet)", n)
	}
	// Watch tells b of the renewed leaf (it is what the rotator adopts).
	deadline := time.After(10 * time.Second)
	for {
		select {
		case l := <-adopted:
			if l.Serial == renewed[0].Serial {
				return
			}
		case <-deadline:
			t.Fatal("the renewed leaf never reached the other replica's watch")
		}
	}
}

func TestWaiterTakesOverFromDeadRenewer(t *testing.T) {
	f := newFixture(t)
	_, stDead := f.replica(t)
	b, _ := f.replica(t)
	// A replica took the lease to issue and died before storing anything.
	if _, ok, err := stDead.TryLease(context.Background(), fleet.LeasePrefix+id, 300*time.Millisecond); err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	leaf, err := b.Issue(id, certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	if leaf.SPIFFEID != id || f.ca.n.Load() != 1 {
		t.Fatalf("got %v after %d issues", leaf, f.ca.n.Load())
	}
}

func TestWaiterGivesUpWithinItsBound(t *testing.T) {
	f := newFixture(t)
	_, stHolder := f.replica(t)
	b, _ := f.replica(t, fleet.WithWait(300*time.Millisecond))
	if _, ok, err := stHolder.TryLease(context.Background(), fleet.LeasePrefix+id, time.Minute); err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	if _, err := b.Issue(id, certs.WithTTL(time.Hour)); err == nil {
		t.Fatal("issued while another replica holds the lease")
	}
}

func TestStoredLeafSealedWithCAKey(t *testing.T) {
	f := newFixture(t)
	a, st := f.replica(t)
	leaf, err := a.Issue(id, certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	val, ok, err := st.Get(context.Background(), fleet.KeyPrefix+id)
	if err != nil || !ok {
		t.Fatalf("nothing stored: %v", err)
	}
	if bytes.Contains(val, leaf.KeyPEM[28:60]) || bytes.Contains(val, []byte("PRIVATE KEY")) {
		t.Fatal("private key stored in clear")
	}
	other, err := certs.Init(filepath.Join(t.TempDir(), "ca"), certs.WithTrustDomain("fleet.test"), certs.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ca      *certs.CA
		purpose string
		opens   bool
	}{
		{"same CA", f.ca.CA, fleet.KeyPrefix + id, true},
		{"another CA", other, fleet.KeyPrefix + id, false},
		{"same CA, other identity", f.ca.CA, fleet.KeyPrefix + "spiffe://fleet.test/sidecar/x", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := fleet.SealerFor(tc.ca)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Open(tc.purpose, val); (err == nil) != tc.opens {
				t.Fatalf("opens=%v, want %v", err == nil, tc.opens)
			}
		})
	}
}

func TestRotatedCALeafIsDue(t *testing.T) {
	f := newFixture(t)
	a, _ := f.replica(t)
	b, _ := f.replica(t)
	before := issueBoth(t, a, b)[0]
	// `gatehouse ca rotate` on the shared directory: both replicas load it.
	next, err := certs.Rotate(f.ca.Dir(), time.Hour, certs.WithClock(f.clock), certs.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := fleet.SealerFor(next, f.ca.CA)
	if err != nil {
		t.Fatal(err)
	}
	f.ca.CA = next
	a.SetSealer(sealer)
	b.SetSealer(sealer)
	after := issueBoth(t, a, b)
	if after[0].Serial != after[1].Serial || after[0].Serial == before.Serial || !after[0].SignedBy(next.Certificate()) {
		t.Fatalf("after CA rotation: %v and %v (before %v)", after[0], after[1], before)
	}
}

// A config edit that changes an identity's DNS names reaches the fleet's
// leaf; replicas running with different names meanwhile (a rollout) each
// serve their own names and do not re-issue each other's leaves in a loop;
// once they agree they share one leaf again.
func TestReplicasFollowDNSNameEdits(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type rep struct {
		iss *fleet.Issuer
		rot *certs.Rotator
	}
	var reps [2]rep
	for i := range reps {
		iss, _ := f.replica(t)
		rot := certs.NewRotator(iss, certs.WithRotatorClock(f.clock), certs.WithRotatorLogger(quiet()))
		iss.Run(ctx, func(id string, l *certs.Leaf) { rot.Adopt(id, l) })
		reps[i] = rep{iss, rot}
	}
	get := func(r rep, dns ...string) *certs.Leaf {
		t.Helper()
		l, err := r.rot.Get(id, certs.WithTTL(time.Hour), certs.WithDNSNames(dns...))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(l.Cert.DNSNames, dns) {
			t.Fatalf("served a leaf for %v, want %v", l.Cert.DNSNames, dns)
		}
		return l
	}
	a, b := reps[0], reps[1]
	first := get(a, "old.example")
	if get(b, "old.example").Serial != first.Serial {
		t.Fatal("replicas with one config serve different leaves")
	}
	// Rollout: a has the edit, b not yet.
	edited := get(a, "new.example")
	if edited.Serial == first.Serial {
		t.Fatal("the edit did not re-issue")
	}
	issued := f.ca.n.Load()
	time.Sleep(500 * time.Millisecond) // let watches deliver whatever they will
	if cur, _ := b.rot.Current(id); cur.Serial != first.Serial {
		t.Errorf("b (old config) adopted a leaf for %v", cur.Cert.DNSNames)
	}
	if get(b, "old.example").Serial != first.Serial {
		t.Error("b re-issued its unchanged leaf")
	}
	if n := f.ca.n.Load(); n != issued {
		t.Errorf("CA issued %d more leaves while the replicas disagreed, want none", n-issued)
	}
	// b gets the edit: it takes the fleet's leaf for the new names.
	if got := get(b, "new.example"); got.Serial != edited.Serial {
		t.Errorf("after the rollout b serves %s, a %s: want one leaf", got.Serial, edited.Serial)
	}
	if n := f.ca.n.Load(); n != issued {
		t.Errorf("CA issued %d more leaves at the end of the rollout, want none", n-issued)
	}
}
