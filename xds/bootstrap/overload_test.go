package bootstrap_test

import (
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	downstreamconnsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"

	"github.com/gatehouse-proxy/gatehouse/xds/bootstrap"
)

// overloadLimits reads back what the overload manager of bs enforces: the
// global connection cap, the heap size, and each heap action's threshold.
func overloadLimits(t *testing.T, bs *bootstrapv3.Bootstrap) (conns int64, heap uint64, actions map[string]float64) {
	t.Helper()
	om := bs.GetOverloadManager()
	if om == nil {
		t.Fatal("no overload_manager")
	}
	if om.GetRefreshInterval().AsDuration().Milliseconds() != 250 {
		t.Errorf("refresh_interval = %v, want 0.25s", om.GetRefreshInterval().AsDuration())
	}
	for _, m := range om.GetResourceMonitors() {
		switch m.GetName() {
		case bootstrap.DownstreamConnectionsMonitor:
			c := &downstreamconnsv3.DownstreamConnectionsConfig{}
			if err := m.GetTypedConfig().UnmarshalTo(c); err != nil {
				t.Fatal(err)
			}
			conns = c.GetMaxActiveDownstreamConnections()
		case bootstrap.FixedHeapMonitor:
			c := &fixedheapv3.FixedHeapConfig{}
			if err := m.GetTypedConfig().UnmarshalTo(c); err != nil {
				t.Fatal(err)
			}
			heap = c.GetMaxHeapSizeBytes()
		default:
			t.Errorf("unexpected resource monitor %q", m.GetName())
		}
	}
	actions = map[string]float64{}
	for _, a := range om.GetActions() {
		// The connection monitor enforces its cap itself (a proactive
		// monitor); the actions are the heap monitor's.
		if tr := a.GetTriggers(); len(tr) != 1 || tr[0].GetName() != bootstrap.FixedHeapMonitor {
			t.Errorf("action %s triggers = %v, want one on %s", a.GetName(), tr, bootstrap.FixedHeapMonitor)
			continue
		}
		actions[a.GetName()] = a.GetTriggers()[0].GetThreshold().GetValue()
	}
	return conns, heap, actions
}

// checkOverloadDefaults asserts the overload manager of Envoy's edge best
// practices with Gatehouse's defaults (used on the shipped bootstraps too).
func checkOverloadDefaults(t *testing.T, bs *bootstrapv3.Bootstrap) {
	t.Helper()
	conns, heap, actions := overloadLimits(t, bs)
	if conns != bootstrap.DefaultMaxDownstreamConnections || heap != bootstrap.DefaultMaxHeapBytes {
		t.Errorf("limits = %d connections, %d heap bytes; want the defaults", conns, heap)
	}
	if actions[bootstrap.ShrinkHeapAction] != 0.95 || actions[bootstrap.StopAcceptingRequestsAction] != 0.98 || len(actions) != 2 {
		t.Errorf("heap actions = %v, want shrink_heap 0.95 and stop_accepting_requests 0.98", actions)
	}
}

func TestOverloadManager(t *testing.T) {
	cp := []string{"gatehouse:18000"}
	tests := []struct {
		name      string
		opts      bootstrap.Options
		wantConns int64
		wantHeap  uint64
		wantErr   string
	}{
		{name: "defaults", opts: bootstrap.Options{NodeID: "edge", ControlPlane: cp},
			wantConns: bootstrap.DefaultMaxDownstreamConnections, wantHeap: bootstrap.DefaultMaxHeapBytes},
		{name: "sized for a small sidecar", opts: bootstrap.Options{NodeID: "orders", ControlPlane: cp, MaxDownstreamConnections: 1000, MaxHeapBytes: 256 << 20},
			wantConns: 1000, wantHeap: 256 << 20},
		{name: "negative connection cap", opts: bootstrap.Options{NodeID: "edge", ControlPlane: cp, MaxDownstreamConnections: -1},
			wantErr: "MaxDownstreamConnections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := renderWant(t, tt.opts, tt.wantErr)
			if bs == nil {
				return
			}
			conns, heap, actions := overloadLimits(t, bs)
			if conns != tt.wantConns || heap != tt.wantHeap {
				t.Errorf("limits = %d connections, %d heap bytes; want %d, %d", conns, heap, tt.wantConns, tt.wantHeap)
			}
			if len(actions) != 2 {
				t.Errorf("heap actions = %v", actions)
			}
			// The deprecated runtime key is superseded by the monitor; no
			// runtime layer (and so no admin-writable layer) is added.
			if bs.GetLayeredRuntime() != nil {
				t.Errorf("layered_runtime = %v, want none", bs.GetLayeredRuntime())
			}
		})
	}
}
