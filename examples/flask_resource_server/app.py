"""A Flask resource server that trusts keyturn's access tokens.

No shared secret: tokens are verified with keyturn's public keys, fetched
from its JWKS by PyJWT's PyJWKClient (cached; a token signed by a key it has
not seen yet, after a rotation, makes it fetch the JWKS again).

    pip install -r requirements.txt
    KEYTURN_ISSUER=http://127.0.0.1:8080 python app.py

Settings (environment):
    KEYTURN_ISSUER    keyturn's issuer URL (the `iss` of its tokens); required
    KEYTURN_AUDIENCE  the `aud` this API accepts (default `keyturn`)
    KEYTURN_JWKS_URL  default: <issuer>/.well-known/jwks.json
    PORT              default 5000; 0 picks a free port (printed on start)

Routes:
    GET /health        no token
    GET /me            any valid token: who is calling, and its claims
    GET /admin/report  a valid token whose `roles` contain `admin`

A missing or bad token is 401 with `WWW-Authenticate: Bearer
error="invalid_token"`; a valid token without the role is 403 `forbidden`;
keyturn's JWKS unreachable (and the key not cached) is 503. The bodies have
keyturn's shape: {"error": ..., "error_description": ...}.

docs/migrating-from-flask-jwt-extended.md maps each Flask-JWT-Extended
habit to this.
"""

import os
from functools import wraps

import jwt
from flask import Flask, g, jsonify, request

ISSUER = os.environ["KEYTURN_ISSUER"]
AUDIENCE = os.environ.get("KEYTURN_AUDIENCE", "keyturn")
JWKS_URL = os.environ.get("KEYTURN_JWKS_URL", ISSUER.rstrip("/") + "/.well-known/jwks.json")
# keyturn signs with RS256 or EdDSA. Never trust the token's own `alg`:
# the algorithm comes from the key (the JWK's `alg`), and must be one of these.
ALGORITHMS = {"RS256", "EdDSA"}
# The clock skew keyturn itself accepts (KEYTURN_LEEWAY).
LEEWAY_SECONDS = 30
# Every claim keyturn puts in an access token that this API relies on.
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"]
# RFC 9068 access tokens; an ID token or any other JWT is not one.
ACCESS_TOKEN_TYPES = {"at+jwt", "application/at+jwt"}

jwks_client = jwt.PyJWKClient(JWKS_URL, cache_jwk_set=True, lifespan=300, timeout=5)
app = Flask(__name__)


class Refused(Exception):
    """A request this API answers with an error."""

    def __init__(self, status, error, description):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@app.errorhandler(Refused)
def refused(err):
    response = jsonify(error=err.error, error_description=err.description)
    response.status_code = err.status
    if err.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def verify(token):
    """The claims of a valid keyturn access token, or Refused."""
    try:
        header = jwt.get_unverified_header(token)
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise Refused(401, "invalid_token", "not an access token (typ)")
        signing_key = jwks_client.get_signing_key_from_jwt(token)
        if signing_key.algorithm_name not in ALGORITHMS:
            raise Refused(401, "invalid_token", "the key's algorithm is not allowed")
        return jwt.decode(
            token,
            signing_key.key,
            algorithms=[signing_key.algorithm_name],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.PyJWKClientConnectionError:
        raise Refused(503, "temporarily_unavailable", "the issuer's keys are unavailable")
    except jwt.PyJWKClientError:
        # No key in the JWKS has this token's kid, even after a refetch.
        raise Refused(401, "invalid_token", "unknown signing key")
    except jwt.ExpiredSignatureError:
        raise Refused(401, "invalid_token", "the token has expired")
    except jwt.InvalidTokenError as err:
        # Bad signature, wrong issuer or audience, missing claim, garbage.
        raise Refused(401, "invalid_token", str(err))


def bearer_token():
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "invalid_token", "a bearer token is required")
    return token.strip()


def token_required(view):
    """Flask-JWT-Extended's @jwt_required(): the claims land in g.claims."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        g.claims = verify(bearer_token())
        return view(*args, **kwargs)

    return wrapper


def role_required(role):
    """A valid token whose `roles` claim contains `role`, else 403."""

    def decorator(view):
        @wraps(view)
        @token_required
        def wrapper(*args, **kwargs):
            if role not in g.claims.get("roles", []):
                raise Refused(403, "forbidden", f"the {role} role is required")
            return view(*args, **kwargs)

        return wrapper

    return decorator


@app.get("/health")
def health():
    return jsonify(status="ok")


@app.get("/me")
@token_required
def me():
    claims = g.claims
    return jsonify(
        sub=claims["sub"],  # get_jwt_identity()
        username=claims.get("username"),  # absent for client tokens
        roles=claims.get("roles", []),
        scope=claims.get("scope", ""),
        client_id=claims.get("client_id"),
        kid=jwt.get_unverified_header(bearer_token())["kid"],
    )


@app.get("/admin/report")
@role_required("admin")
def admin_report():
    return jsonify(report="for admins only", by=g.claims.get("username"))


if __name__ == "__main__":
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(os.environ.get("PORT", "5000")), app)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
