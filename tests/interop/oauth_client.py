#!/usr/bin/env python3
"""Interoperability check: third-party OAuth and JWT libraries against a
running keyturn.

    python3 tests/interop/oauth_client.py BASE_URL CLIENT_ID CLIENT_SECRET

1. Discovery: fetches RFC 8414 metadata and checks it with authlib's
   metadata model.
2. client_credentials with authlib's OAuth2Session, once with
   client_secret_basic and once with client_secret_post.
3. Verifies the access token with PyJWT against the JWKS named in the
   metadata (key chosen by kid, algorithms from the metadata, issuer and
   audience checked).
4. Introspects and revokes the token with authlib (RFC 7662, RFC 7009).

Prints one "ok: ..." line per step and exits 0, or prints "FAIL: ..." and
exits 1. Dependencies: tests/interop/requirements.txt.
"""

import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def discover(base_url):
    url = base_url.rstrip("/") + "/.well-known/oauth-authorization-server"
    response = requests.get(url, timeout=10)
    check(response.status_code == 200, f"GET {url} -> {response.status_code}")
    metadata = AuthorizationServerMetadata(response.json())
    # authlib's validate() insists on a non-empty response_types_supported;
    # keyturn has no authorization endpoint and publishes an empty list
    # (docs/decisions.md). Every other RFC 8414 member is validated.
    for key in metadata.REGISTRY_KEYS:
        if key == "response_types_supported":
            continue
        try:
            getattr(metadata, f"validate_{key}")()
        except ValueError as error:
            fail(f"metadata member {key}: {error}")
    check(
        isinstance(metadata.get("response_types_supported"), list),
        "response_types_supported must be a list",
    )
    check(
        metadata["issuer"].rstrip("/") == base_url.rstrip("/"),
        f"issuer {metadata['issuer']} is not {base_url}",
    )
    check(
        "client_credentials" in metadata["grant_types_supported"],
        "client_credentials is not a supported grant",
    )
    print(f"ok: discovery ({metadata['token_endpoint']})")
    return metadata


def fetch(metadata, client_id, secret, method):
    session = OAuth2Session(
        client_id,
        secret,
        token_endpoint_auth_method=method,
    )
    token = session.fetch_token(
        metadata["token_endpoint"], grant_type="client_credentials"
    )
    check(token.get("token_type", "").lower() == "bearer", f"token_type {token}")
    check("refresh_token" not in token, "client_credentials returned a refresh token")
    check(int(token["expires_in"]) > 0, "expires_in")
    print(f"ok: client_credentials with {method}")
    return session, token


def verify(metadata, token, client_id):
    jwks = jwt.PyJWKClient(metadata["jwks_uri"])
    signing_key = jwks.get_signing_key_from_jwt(token["access_token"])
    header = jwt.get_unverified_header(token["access_token"])
    check(header.get("typ") == "at+jwt", f"typ {header.get('typ')}")
    claims = jwt.decode(
        token["access_token"],
        signing_key.key,
        algorithms=metadata["id_token_signing_alg_values_supported"],
        audience="keyturn",
        issuer=metadata["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    check(claims["sub"] == client_id, f"sub {claims['sub']}")
    check(claims["client_id"] == client_id, f"client_id {claims['client_id']}")
    check(claims["scope"] == token.get("scope", ""), "scope claim differs from the response")
    check("username" not in claims, "a client token has no username")
    print(f"ok: PyJWT verified {header['alg']} token with kid {header['kid'][:12]}…")


def introspect_and_revoke(metadata, session, token):
    response = session.introspect_token(
        metadata["introspection_endpoint"], token=token["access_token"]
    )
    check(response.status_code == 200, f"introspection -> {response.status_code}")
    check(response.json().get("active") is True, f"introspection {response.text}")
    response = session.revoke_token(
        metadata["revocation_endpoint"], token=token["access_token"]
    )
    check(response.status_code == 200, f"revocation -> {response.status_code}")
    response = session.introspect_token(
        metadata["introspection_endpoint"], token=token["access_token"]
    )
    check(response.json() == {"active": False}, f"after revocation {response.text}")
    print("ok: introspection and revocation")


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    base_url, client_id, secret = sys.argv[1:]
    metadata = discover(base_url)
    fetch(metadata, client_id, secret, "client_secret_post")
    session, token = fetch(metadata, client_id, secret, "client_secret_basic")
    verify(metadata, token, client_id)
    introspect_and_revoke(metadata, session, token)
    print("interop: all checks passed")


if __name__ == "__main__":
    main()
