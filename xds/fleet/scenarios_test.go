package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/internal/store"
	"github.com/gatehouse-proxy/gatehouse/xds/fleet"
)

// member is a replica wired as the xds command wires it: a Rotator issuing
// through the fleet Issuer, adopting what the Issuer's watch reports, and
// renewing in Run.
type member struct {
	iss *fleet.Issuer
	st  store.Store
	rot *certs.Rotator
}

// issuer is f.replica for a replica that loaded another CA (directory
// state) than the fixture's: ca and sealer, over a store of its own.
func (f *fixture) issuer(t *testing.T, ca fleet.CA, sealer *store.Sealer, opts ...fleet.Option) (*fleet.Issuer, store.Store) {
	t.Helper()
	iss, st := f.replica(t, opts...)
	if ca == nil {
		return iss, st
	}
	opts = append([]fleet.Option{fleet.WithLogger(quiet()), fleet.WithClock(f.clock), fleet.WithPoll(50 * time.Millisecond), fleet.WithWait(20 * time.Second)}, opts...)
	return fleet.New(st, ca, sealer, opts...), st
}

// member starts a replica of f (see issuer) with its Rotator.
func (f *fixture) member(t *testing.T, ctx context.Context, ca fleet.CA, sealer *store.Sealer, opts ...fleet.Option) *member {
	t.Helper()
	iss, st := f.issuer(t, ca, sealer, opts...)
	rot := certs.NewRotator(iss, certs.WithRotatorClock(f.clock), certs.WithRotatorLogger(quiet()), certs.WithRetryInterval(time.Second))
	iss.Run(ctx, func(id string, l *certs.Leaf) { rot.Adopt(id, l) })
	go iss.Reshare(ctx, 200*time.Millisecond, rot.Renew)
	done := make(chan struct{})
	go func() { defer close(done); _ = rot.Run(ctx) }()
	t.Cleanup(func() { <-done })
	return &member{iss: iss, st: st, rot: rot}
}

// sharing starts two members serving one fleet leaf for id, first.
func (f *fixture) sharing(t *testing.T, ctx context.Context) (a, b *member, first *certs.Leaf) {
	t.Helper()
	a, b = f.member(t, ctx, nil, nil), f.member(t, ctx, nil, nil)
	first, err := a.rot.Get(id, certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if l, err := b.rot.Get(id, certs.WithTTL(time.Hour)); err != nil || l.Serial != first.Serial {
		t.Fatalf("b: %v %v", l, err)
	}
	return a, b, first
}

func (m *member) serial(t *testing.T) string {
	t.Helper()
	l, ok := m.rot.Current(id)
	if !ok {
		t.Fatal("no leaf held")
	}
	return l.Serial
}

// eventually polls cond until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// healthy waits until every store is connected and synchronised.
func healthy(t *testing.T, sts ...store.Store) {
	t.Helper()
	if !eventually(20*time.Second, func() bool {
		for _, st := range sts {
			if st.Healthy() != nil {
				return false
			}
		}
		return true
	}) {
		t.Fatal("stores never reconnected")
	}
}

// With Redis stopped, every replica still gets a certificate at once
// (issued locally, not after the wait bound); once Redis is back one
// renewal brings them onto one leaf again.
func TestRedisDownIssuesLocallyThenConverges(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := f.member(t, ctx, nil, nil), f.member(t, ctx, nil, nil)
	f.srv.Stop()

	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, m := range []*member{a, b} {
		wg.Go(func() { _, errs[i] = m.rot.Get(id, certs.WithTTL(time.Hour)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("with Redis down: %v", err)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("issuing with Redis down took %s", took)
	}
	if n := f.ca.n.Load(); n != 2 {
		t.Errorf("CA issued %d leaves with Redis down, want one per replica", n)
	}

	f.srv.Restart()
	healthy(t, a.st, b.st)
	t.Run("converge when Redis is back", func(t *testing.T) {
		if !eventually(5*time.Second, func() bool { return a.serial(t) == b.serial(t) }) {
			t.Errorf("replicas serve %s and %s after Redis is back", a.serial(t), b.serial(t))
		}
	})
	// The next renewal (here forced on one replica) is issued for the fleet.
	a.rot.RenewAll()
	if !eventually(10*time.Second, func() bool { return a.serial(t) == b.serial(t) }) {
		t.Fatalf("after a renewal replicas serve %s and %s", a.serial(t), b.serial(t))
	}
	if n := f.ca.n.Load(); n != 3 {
		t.Errorf("CA issued %d leaves, want 3 (two local, one for the fleet)", n)
	}
}

// gatedCA is the fixture's CA whose Issue waits for the gate: a replica
// stuck (or dying) mid-issue.
type gatedCA struct {
	*countingCA
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedCA) Issue(spiffeID string, opts ...certs.IssueOption) (*certs.Leaf, error) {
	g.entered <- struct{}{}
	<-g.gate
	return g.countingCA.Issue(spiffeID, opts...)
}

func (f *fixture) gated() *gatedCA {
	return &gatedCA{countingCA: f.ca, entered: make(chan struct{}, 8), gate: make(chan struct{})}
}

func (f *fixture) sealer(t *testing.T, cas ...*certs.CA) *store.Sealer {
	t.Helper()
	s, err := fleet.SealerFor(cas...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Redis stops while one replica holds the lease and issues, another
// waiting for it: both get a leaf promptly (the holder its own, unshared;
// the waiter one issued locally), and after Redis is back they share one.
func TestRedisStoppedMidIssue(t *testing.T) {
	f := newFixture(t)
	g := f.gated()
	holder, _ := f.issuer(t, g, f.sealer(t, f.ca.CA))
	waiter, wst := f.issuer(t, nil, nil)

	type result struct {
		leaf *certs.Leaf
		err  error
	}
	hc, wc := make(chan result, 1), make(chan result, 1)
	go func() { l, err := holder.Issue(id, certs.WithTTL(time.Hour)); hc <- result{l, err} }()
	<-g.entered // the holder has the lease and is issuing
	go func() { l, err := waiter.Issue(id, certs.WithTTL(time.Hour)); wc <- result{l, err} }()
	time.Sleep(200 * time.Millisecond) // the waiter found the lease taken
	f.srv.Stop()
	close(g.gate)
	for name, ch := range map[string]chan result{"holder": hc, "waiter": wc} {
		select {
		case r := <-ch:
			if r.err != nil || r.leaf.SPIFFEID != id {
				t.Errorf("%s: %v %v", name, r.leaf, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still waiting 10s after Redis stopped", name)
		}
	}
	f.srv.Restart()
	healthy(t, wst)
	leaves := issueBoth(t, waiter, holder)
	if leaves[0].Serial != leaves[1].Serial {
		t.Errorf("after Redis is back replicas issue %s and %s", leaves[0].Serial, leaves[1].Serial)
	}
}

// A stored leaf that does not open, or opens to something else than a
// leaf for its key's identity, is never served nor handed to the watch
// callback; the next Issue replaces it with a good one.
func TestTamperedLeafIsRefusedAndReplaced(t *testing.T) {
	other, err := certs.Init(filepath.Join(t.TempDir(), "ca"), certs.WithTrustDomain("fleet.test"), certs.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	const id2 = "spiffe://fleet.test/sidecar/billing"
	tests := []struct {
		name   string
		tamper func(t *testing.T, f *fixture, st store.Store, val []byte) []byte
	}{
		{"last byte flipped", func(_ *testing.T, _ *fixture, _ store.Store, v []byte) []byte {
			v[len(v)-1] ^= 1
			return v
		}},
		{"middle byte flipped", func(_ *testing.T, _ *fixture, _ store.Store, v []byte) []byte {
			v[len(v)/2] ^= 0x80
			return v
		}},
		{"truncated", func(_ *testing.T, _ *fixture, _ store.Store, v []byte) []byte { return v[:len(v)/2] }},
		{"empty", func(*testing.T, *fixture, store.Store, []byte) []byte { return []byte{} }},
		{"another identity's value", func(t *testing.T, f *fixture, st store.Store, _ []byte) []byte {
			a, _ := f.replica(t)
			if _, err := a.Issue(id2, certs.WithTTL(time.Hour)); err != nil {
				t.Fatal(err)
			}
			v, _, _ := st.Get(context.Background(), fleet.KeyPrefix+id2)
			return v
		}},
		{"sealed with another CA's key", func(t *testing.T, f *fixture, _ store.Store, _ []byte) []byte {
			l, err := other.Issue(id, certs.WithTTL(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			return sealLeaf(t, f.sealer(t, other), id, l)
		}},
		{"another identity's leaf under this key", func(t *testing.T, f *fixture, _ store.Store, _ []byte) []byte {
			l, err := f.ca.CA.Issue(id2, certs.WithTTL(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			return sealLeaf(t, f.sealer(t, f.ca.CA), id, l)
		}},
		{"key of another leaf", func(t *testing.T, f *fixture, _ store.Store, _ []byte) []byte {
			l1, _ := f.ca.CA.Issue(id, certs.WithTTL(time.Hour))
			l2, _ := f.ca.CA.Issue(id, certs.WithTTL(time.Hour))
			mixed := *l1
			mixed.KeyPEM = l2.KeyPEM
			return sealLeaf(t, f.sealer(t, f.ca.CA), id, &mixed)
		}},
		{"not JSON", func(t *testing.T, f *fixture, _ store.Store, _ []byte) []byte {
			return f.sealer(t, f.ca.CA).Seal(fleet.KeyPrefix+id, []byte("not json"))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a, st := f.replica(t)
			b, _ := f.replica(t)
			var mu sync.Mutex
			var seen []string
			b.Run(ctx, func(gotID string, l *certs.Leaf) {
				if gotID != id {
					return // the tamper's own leaves for other identities
				}
				mu.Lock()
				defer mu.Unlock()
				seen = append(seen, l.Serial)
			})
			good, err := a.Issue(id, certs.WithTTL(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			val, _, err := st.Get(ctx, fleet.KeyPrefix+id)
			if err != nil {
				t.Fatal(err)
			}
			bad := tc.tamper(t, f, st, val)
			if !eventually(5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) > 0 }) {
				t.Fatal("the watch never saw the good leaf")
			}
			mu.Lock()
			seen = nil
			mu.Unlock()
			issued := f.ca.n.Load()
			if err := st.Put(ctx, fleet.KeyPrefix+id, bad, time.Hour); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond) // the watch reads what was put
			mu.Lock()
			if len(seen) != 0 {
				t.Errorf("the watch handed on %v from a tampered value", seen)
			}
			mu.Unlock()
			leaf, err := b.Issue(id, certs.WithTTL(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if leaf.SPIFFEID != id || leaf.Serial == good.Serial || !leaf.SignedBy(f.ca.Certificate()) {
				t.Errorf("served %v (the good one was %s)", leaf, good.Serial)
			}
			if _, err := leaf.TLSCertificate(); err != nil {
				t.Errorf("served a leaf whose key does not match: %v", err)
			}
			if n := f.ca.n.Load() - issued; n != 1 {
				t.Errorf("%d leaves issued to replace the tampered one, want 1", n)
			}
			if again, err := a.Issue(id, certs.WithTTL(time.Hour)); err != nil || again.Serial != leaf.Serial {
				t.Errorf("the replacement is not shared: %v %v", again, err)
			}
		})
	}
}

// sealLeaf is what a replica stores for l under id's key (the package's
// stored format), sealed with s.
func sealLeaf(t *testing.T, s *store.Sealer, spiffeID string, l *certs.Leaf) []byte {
	t.Helper()
	val, err := json.Marshal(map[string]any{"chain": l.ChainPEM, "key": l.KeyPEM, "issued_at": time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return s.Seal(fleet.KeyPrefix+spiffeID, val)
}

// After `gatehouse ca rotate`, the leaf stored by the old CA is replaced
// by one from the new CA, whether the replica can open the old seal (it
// loaded the rotation live: sealer of new and old CA) or not (it started
// after the rotation: sealer of the new CA only).
func TestLeafSealedByOldCAAfterRotation(t *testing.T) {
	for _, restarted := range []bool{false, true} {
		t.Run(fmt.Sprintf("restarted=%v", restarted), func(t *testing.T) {
			f := newFixture(t)
			a, _ := f.replica(t)
			before, err := a.Issue(id, certs.WithTTL(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			next, err := certs.Rotate(f.ca.Dir(), time.Hour, certs.WithClock(f.clock), certs.WithLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			prev := f.ca.CA
			f.ca.CA = next
			sealer := f.sealer(t, next, prev)
			if restarted {
				sealer = f.sealer(t, next)
			}
			a.SetSealer(sealer)
			b, _ := f.replica(t)
			b.SetSealer(sealer)
			after := issueBoth(t, a, b)
			if after[0].Serial != after[1].Serial || after[0].Serial == before.Serial || !after[0].SignedBy(next.Certificate()) {
				t.Fatalf("after the rotation replicas serve %v and %v (before %v)", after[0], after[1], before)
			}
			if n := f.ca.n.Load(); n != 2 {
				t.Errorf("CA issued %d leaves, want 2", n)
			}
		})
	}
}

// rotatedCA is a CA as one replica sees it: the fixture's CA directory
// loaded at some moment. The shared countingCA counts its issues.
type rotatedCA struct {
	*certs.CA
	count *countingCA
}

func (r rotatedCA) Issue(spiffeID string, opts ...certs.IssueOption) (*certs.Leaf, error) {
	r.count.n.Add(1)
	return r.CA.Issue(spiffeID, opts...)
}

// During a CA rotation replicas load the new CA one after the other. A
// replica already on the new CA never serves a leaf of the rotated-out CA
// that a replica still on the old one stores meanwhile: its own Issue
// refuses such a leaf as due, and what it adopts from the watch must obey
// the same rule.
func TestRotatedReplicaDoesNotAdoptOldCALeaf(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := f.ca.CA
	next, err := certs.Rotate(f.ca.Dir(), time.Hour, certs.WithClock(f.clock), certs.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	// a loaded the rotation (seals with the new key, opens both); b not yet.
	a := f.member(t, ctx, rotatedCA{next, f.ca}, f.sealer(t, next, old))
	b := f.member(t, ctx, rotatedCA{old, f.ca}, f.sealer(t, old))
	onNew, err := a.rot.Get(id, certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !onNew.SignedBy(next.Certificate()) {
		t.Fatal("a did not issue from the new CA")
	}
	// b asks for the identity before it loads the new CA.
	fromOld, err := b.rot.Get(id, certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if fromOld.SignedBy(next.Certificate()) {
		t.Skip("b served the new CA's leaf: nothing to check")
	}
	time.Sleep(500 * time.Millisecond) // the watch delivers b's Put to a
	if cur, _ := a.rot.Current(id); !cur.SignedBy(next.Certificate()) {
		t.Errorf("a, on the new CA, now serves %s signed by the rotated-out CA", cur.Serial)
	}
}

// ForceRenew on one replica (POST /debug/rotate) renews each identity once
// for the fleet: that replica issues, the others take its leaf.
func TestForceRenewRenewsOnceForTheFleet(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b, first := f.sharing(t, ctx)
	f.clock.Advance(time.Second)
	a.iss.ForceRenew()
	a.rot.RenewAll()
	if !eventually(10*time.Second, func() bool {
		return a.serial(t) != first.Serial && a.serial(t) == b.serial(t)
	}) {
		t.Fatalf("after ForceRenew a serves %s, b %s (before %s)", a.serial(t), b.serial(t), first.Serial)
	}
	// b's own routine renewal (RenewAll) takes the fleet's leaf.
	b.rot.RenewAll()
	time.Sleep(300 * time.Millisecond)
	if n := f.ca.n.Load(); n != 2 {
		t.Errorf("CA issued %d leaves, want 2 (one forced renewal for the fleet)", n)
	}
	if a.serial(t) != b.serial(t) {
		t.Errorf("replicas diverged: %s and %s", a.serial(t), b.serial(t))
	}
}

// Any number of replicas asking for one identity at once get one leaf.
func TestManyReplicasIssueOnce(t *testing.T) {
	for _, n := range []int{3, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			f := newFixture(t)
			reps := make([]*fleet.Issuer, n)
			for i := range reps {
				reps[i], _ = f.replica(t)
			}
			leaves := issueBoth(t, reps...)
			for _, l := range leaves[1:] {
				if l.Serial != leaves[0].Serial {
					t.Fatalf("replicas serve %s and %s", leaves[0].Serial, l.Serial)
				}
			}
			if got := f.ca.n.Load(); got != 1 {
				t.Errorf("CA issued %d leaves for %d replicas, want 1", got, n)
			}
		})
	}
}

// A holder stuck past its lease TTL (WithLeaseTTL) is taken over; when it
// finally stores its late leaf, the replicas still end on one leaf.
func TestStuckHolderPastLeaseTTL(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := f.gated()
	stuck := f.member(t, ctx, g, f.sealer(t, f.ca.CA), fleet.WithLeaseTTL(300*time.Millisecond))
	other := f.member(t, ctx, nil, nil, fleet.WithLeaseTTL(300*time.Millisecond))
	done := make(chan error, 1)
	go func() { _, err := stuck.rot.Get(id, certs.WithTTL(time.Hour)); done <- err }()
	<-g.entered
	start := time.Now()
	taken, err := other.rot.Get(id, certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatalf("after the holder's lease expired: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took over after %s, lease TTL 300ms", took)
	}
	close(g.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !eventually(10*time.Second, func() bool { return stuck.serial(t) == other.serial(t) }) {
		t.Errorf("replicas serve %s and %s after the stuck holder finished", stuck.serial(t), other.serial(t))
	}
	// Fenced: the late holder takes the leaf stored meanwhile instead of
	// overwriting it, so the replica that took over keeps serving its own.
	time.Sleep(300 * time.Millisecond) // a late Put would reach other's watch by now
	if got := other.serial(t); got != taken.Serial {
		t.Errorf("the stuck holder's late leaf replaced the one stored meanwhile: %s, was %s", got, taken.Serial)
	}
}

// An identity no replica keeps any more is not brought back by a leaf
// another replica stores for it.
func TestForgottenIdentityIsNotAdopted(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := f.member(t, ctx, nil, nil)
	if _, err := a.rot.Get(id, certs.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	a.rot.Forget(id)
	late, _ := f.replica(t)
	f.clock.Advance(time.Second)
	late.ForceRenew()
	if _, err := late.Issue(id, certs.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, ok := a.rot.Current(id); ok || len(a.rot.IDs()) != 0 {
		t.Errorf("a forgotten identity came back: %v", a.rot.IDs())
	}
}

// pause makes Redis unreachable for d without losing its data (CLIENT
// PAUSE ALL: every command waits), as a network partition would.
func (f *fixture) pause(t *testing.T, d time.Duration) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: f.srv.Addr()})
	defer c.Close()
	if err := c.Do(context.Background(), "CLIENT", "PAUSE", d.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
}

// Redis unreachable (data kept) when a shared leaf falls due: replicas
// renew locally. When Redis answers again the watch resyncs every stored
// key; the stored leaf is the one just renewed away from, due, and must
// not replace the fresh local ones (each replica's own Issue would refuse
// it as due).
func TestDueLeafNotReadoptedAfterPartition(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b, first := f.sharing(t, ctx)
	f.pause(t, 6*time.Second)
	f.clock.Set(first.RenewAt().Add(time.Second)) // both Rotators renew now
	if !eventually(5*time.Second, func() bool { return a.serial(t) != first.Serial && b.serial(t) != first.Serial }) {
		t.Fatal("replicas did not renew while Redis was unreachable")
	}
	if !eventually(15*time.Second, func() bool { return a.st.Healthy() != nil || b.st.Healthy() != nil }) {
		t.Fatal("the partition was never noticed: no resync to test")
	}
	healthy(t, a.st, b.st)
	time.Sleep(time.Second) // the resync's watch calls
	for name, m := range map[string]*member{"a": a, "b": b} {
		if m.serial(t) == first.Serial {
			t.Errorf("%s went back to the due leaf %s after the partition", name, first.Serial)
		}
	}
}
