package extauthz

import (
	"context"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"
)

// JWTTokens makes a jwt.Verifier the server's TokenVerifier.
func JWTTokens(v *jwt.Verifier) TokenVerifier { return jwtTokens{v} }

type jwtTokens struct{ v *jwt.Verifier }

func (j jwtTokens) VerifyToken(ctx context.Context, token string) (*identity.Identity, error) {
	res, err := j.v.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	id := res.Identity()
	return &id, nil
}
