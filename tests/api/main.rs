//! The one integration-test binary: every module starts real servers on
//! random ports and talks HTTP to them.

mod admin;
mod audit;
mod browser;
mod cli;
mod clients;
mod config;
mod containment;
mod cookies;
mod cors;
mod crosscheck;
mod discovery;
mod faults;
mod flask;
mod health;
mod helpers;
mod hostile;
mod input;
mod interop;
mod jwks;
mod layers;
mod login;
mod oauth;
mod openapi;
mod postgres;
mod readme;
mod revocation;
mod rotation;
mod sessions;
mod strict_http;
mod throttle;
mod tokens;
mod tools;
mod user_races;
mod verifier;
