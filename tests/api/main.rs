//! The one integration-test binary: every module starts real servers on
//! random ports and talks HTTP to them.

mod admin;
mod cli;
mod health;
mod helpers;
mod input;
mod jwks;
mod login;
mod openapi;
mod postgres;
mod rotation;
mod tokens;
mod verifier;
