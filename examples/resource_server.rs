//! A small resource server that trusts a keyturn issuer.
//!
//! ```text
//! cargo run --no-default-features --features poem --example resource_server -- \
//!     http://127.0.0.1:8080 [--audience keyturn] [--bind 127.0.0.1:3000]
//! ```
//!
//! Routes:
//! - `GET /public`: no token needed;
//! - `GET /me`: any valid access token, answers with its claims;
//! - `GET /admin`: a valid token whose `roles` contain `admin` (403 otherwise).
//!
//! With keyturn running beside it:
//!
//! ```text
//! TOKEN=$(curl -s localhost:8080/login -H 'content-type: application/json' \
//!     -d '{"username":"alice","password":"…"}' | jq -r .access_token)
//! curl -i localhost:3000/public
//! curl -i localhost:3000/me -H "Authorization: Bearer $TOKEN"
//! curl -i localhost:3000/admin -H "Authorization: Bearer $TOKEN"
//! ```

use std::process::ExitCode;

use keyturn::verifier::poem::{BearerClaims, require_role};
use keyturn::verifier::{Claims, Verifier};
use poem::listener::TcpListener;
use poem::web::{Data, Json};
use poem::{EndpointExt, Route, Server, get, handler};
use serde_json::{Value, json};

#[handler]
fn public() -> Json<Value> {
    Json(json!({"message": "anyone can read this"}))
}

/// Any valid token: the claims are an argument.
#[handler]
fn me(BearerClaims(claims): BearerClaims) -> Json<Value> {
    Json(json!({
        "sub": claims.sub,
        "username": claims.username,
        "roles": claims.roles,
        "scopes": claims.scopes().collect::<Vec<_>>(),
        "client_id": claims.client_id,
    }))
}

/// Behind `require_role("admin")`: the middleware left the claims in the request data.
#[handler]
fn admin(claims: Data<&Claims>) -> Json<Value> {
    Json(json!({"message": format!("welcome, admin {}", claims.sub)}))
}

const USAGE: &str = "usage: resource_server ISSUER_URL [--audience AUD] [--bind ADDR]   (default audience `keyturn`, bind 127.0.0.1:3000)";

struct Args {
    issuer: String,
    audience: String,
    bind: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut issuer = None;
    let mut audience = "keyturn".to_owned();
    let mut bind = "127.0.0.1:3000".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--audience" => audience = args.next().ok_or("--audience needs a value")?,
            "--bind" => bind = args.next().ok_or("--bind needs a value")?,
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            _ if issuer.is_none() => issuer = Some(arg),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    Ok(Args {
        issuer: issuer.ok_or("missing ISSUER_URL")?,
        audience,
        bind,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let verifier = match Verifier::builder()
        .issuer_url(&args.issuer)
        .audience([args.audience.as_str()])
        .build()
        .await
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: cannot trust {}: {e}", args.issuer);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "trusting {} (keys from {}), audience `{}`; listening on http://{}",
        args.issuer,
        verifier.jwks_url().unwrap_or("-"),
        args.audience,
        args.bind
    );
    let app = Route::new()
        .at("/public", get(public))
        .at("/me", get(me))
        .at("/admin", get(admin).with(require_role("admin")))
        .data(verifier);
    match Server::new(TcpListener::bind(args.bind)).run(app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
