package translate_test

import (
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/gatehouse-proxy/gatehouse/xds/translate"
)

// TestEnvoyNormalisationSettings: every listener that asks ext_authz (edge
// and sidecar inbound alike) hands it the path the upstream will see, so
// path policies cannot be bypassed by spelling the path differently.
//
// What the three settings do in Envoy:
//   - normalize_path: RFC 3986 normalisation — percent-decodes unreserved
//     characters ("/%61dmin" → "/admin"), removes "." and ".." segments
//     (also "%2e"), upper-cases the remaining escapes; it does not merge
//     slashes, does not decode %2F or %5C, keeps ";" parameters and %25
//     (double encoding), and never changes case ("/Admin" stays);
//   - merge_slashes: "//admin" → "/admin";
//   - path_with_escaped_slashes_action REJECT_REQUEST: a path with %2F or
//     %5C (either case) is answered 400 by Envoy and never reaches ext_authz
//     or the upstream (the default, KEEP_UNCHANGED, forwards it: BuildInput
//     would read %2F as a separator, an upstream might not).
//
// What is left for policy — case, ";" parameters, double encoding,
// backslashes, non-ASCII look-alikes — is refused by policies/path.rego
// (see TestShippedPoliciesResistPathBypass in extauthz/policy).
func TestEnvoyNormalisationSettings(t *testing.T) {
	res := translateExample(t)
	checked := 0
	for id, nr := range res.Nodes {
		for _, r := range nr.Listeners {
			l := r.(*listenerv3.Listener)
			if l.GetApiListener() == nil && len(l.GetFilterChains()) == 0 {
				continue
			}
			h := hcmOf(t, l)
			names := filterNames(h)
			if !slices.Contains(names, translate.ExtAuthzFilterName) {
				continue
			}
			checked++
			if !h.GetNormalizePath().GetValue() {
				t.Errorf("%s/%s: normalize_path off", id, l.GetName())
			}
			if !h.GetMergeSlashes() {
				t.Errorf("%s/%s: merge_slashes off", id, l.GetName())
			}
			if got := h.GetPathWithEscapedSlashesAction(); got != hcmv3.HttpConnectionManager_REJECT_REQUEST {
				t.Errorf("%s/%s: path_with_escaped_slashes_action = %v, want REJECT_REQUEST", id, l.GetName(), got)
			}
			// The identity headers are stripped before ext_authz runs.
			if i, j := slices.Index(names, translate.HeaderMutationFilterName), slices.Index(names, translate.ExtAuthzFilterName); i < 0 || i > j {
				t.Errorf("%s/%s: header_mutation not before ext_authz: %v", id, l.GetName(), names)
			}
		}
	}
	if checked < 3 {
		t.Fatalf("only %d authorising listeners found in the example", checked)
	}
}
