package extauthz

import "testing"

// "Bearer<TAB>token" is refused as malformed so the token does not reach
// the upstream as an anonymous request's header, also when a space follows
// somewhere ("Bearer<TAB> token", "Bearer<TAB>token x"): a first version
// cut on the space and saw the scheme "Bearer\t…", that is no token.
func TestBearerTabWithSpace(t *testing.T) {
	for _, v := range []string{"Bearer\t eyJhbGciOi.e30.sig", "Bearer\teyJhbGciOi.e30.sig trailing"} {
		tok, present, err := bearerToken(map[string]string{"authorization": v})
		if !present || err == nil {
			t.Errorf("bearerToken(%q) = %q, present %v, err %v; want present and malformed", v, tok, present, err)
		}
	}
}
