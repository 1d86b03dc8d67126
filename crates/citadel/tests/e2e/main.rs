//! End-to-end tests: the real server (in-process and as the real binary) on
//! loopback with TLS on, against small real upstream servers.

mod support;
mod tls;

mod admin;
mod audit;
mod binary;
mod gateway;
mod identity;
mod jwt;
mod limits;
mod machines;
mod oidc;
mod passkeys;
mod policy;
mod privacy;
mod upstream_tls;
mod verify;
