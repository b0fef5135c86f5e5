//! The `cometbox` PHP extension: the PHP functions php-client's
//! NativeTransport calls (see php-ext/README.md). The connections and their
//! retry rules are in `conn`; this file only converts between PHP values and
//! Rust ones.
//!
//! - `cometbox_native_request(string $address, string $method, string
//!   $target, array $headers, ?string $body, float $connect_timeout, float
//!   $timeout): array` sends one request over this worker's persistent
//!   connection to `$address` (`tcp:host:port` or `unix:/path`) and returns
//!   `['status' => int, 'headers' => array, 'body' => string]`, or
//!   `['error' => code, 'message' => string]` with php-client's codes
//!   (`connection-failed`, `timeout`, `connection-lost`). Errors are returned,
//!   not thrown, so that php-client throws its own exception classes, the
//!   same with and without the extension.
//! - `cometbox_native_stats(): array` this worker's counters (connections
//!   opened, requests, reused, ...) and how many connections it holds.
//! - `cometbox_native_close(): void` closes this worker's connections.

#![cfg_attr(windows, feature(abi_vectorcall))]

mod conn;

use std::time::Duration;

use ext_php_rs::binary::Binary;
use ext_php_rs::boxed::ZBox;
use ext_php_rs::info_table_end;
use ext_php_rs::info_table_row;
use ext_php_rs::info_table_start;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendHashTable, Zval};
use ext_php_rs::zend::ModuleEntry;

/// The extension's version, also `phpversion('cometbox')`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn seconds(value: f64, what: &str) -> PhpResult<Duration> {
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("cometbox_native_request(): {what} must be a number of seconds > 0").into());
    }
    Ok(Duration::from_secs_f64(value.min(86_400.0)))
}

fn error_array(code: &str, message: &str) -> PhpResult<ZBox<ZendHashTable>> {
    let mut out = ZendHashTable::new();
    out.insert("error", code)?;
    out.insert("message", message)?;
    Ok(out)
}

#[php_function]
pub fn cometbox_native_request(
    address: &str,
    method: &str,
    target: &str,
    headers: &ZendHashTable,
    body: &Zval,
    connect_timeout: f64,
    timeout: f64,
) -> PhpResult<ZBox<ZendHashTable>> {
    let Some(addr) = conn::Address::parse(address) else {
        return Err(format!("cometbox_native_request(): address must be tcp:host:port or unix:/path, got '{address}'").into());
    };
    let connect_timeout = seconds(connect_timeout, "connect_timeout")?;
    let timeout = seconds(timeout, "timeout")?;
    // php-client validates these; checked again because a CR or LF here
    // would let one request smuggle another onto the shared connection.
    let clean = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
    if method.is_empty() || !clean(method) || !clean(target) || target.contains(' ') {
        return Err("cometbox_native_request(): invalid method or target".into());
    }
    let mut list = Vec::with_capacity(headers.len());
    for (key, value) in headers.iter() {
        let name = key.to_string();
        let value = value.string().unwrap_or_default();
        if name.is_empty() || !clean(&name) || name.contains(':') || !clean(&value) {
            return Err(format!("cometbox_native_request(): invalid request header '{name}'").into());
        }
        list.push((name, value));
    }
    let body_bytes = if body.is_null() {
        None
    } else {
        Some(
            body.zend_str()
                .ok_or_else(|| PhpException::from_message("cometbox_native_request(): body must be a string or null".into()))?
                .as_bytes(),
        )
    };
    let req = conn::Request { method, target, headers: list, body: body_bytes };
    match conn::request(address, &addr, &req, connect_timeout, timeout) {
        Ok(reply) => {
            let mut head = ZendHashTable::new();
            for (name, value) in reply.headers {
                head.insert(name.as_str(), value)?;
            }
            let mut out = ZendHashTable::new();
            out.insert("status", i64::from(reply.status))?;
            out.insert("headers", head)?;
            out.insert("body", Binary::new(reply.body))?;
            Ok(out)
        }
        Err(failure) => error_array(failure.code(), failure.message()),
    }
}

#[php_function]
pub fn cometbox_native_stats() -> PhpResult<ZBox<ZendHashTable>> {
    let s = conn::stats();
    let mut out = ZendHashTable::new();
    let as_int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    out.insert("pid", i64::from(std::process::id()))?;
    out.insert("open_connections", as_int(conn::pooled() as u64))?;
    out.insert("connects", as_int(s.connects))?;
    out.insert("requests", as_int(s.requests))?;
    out.insert("reused", as_int(s.reused))?;
    out.insert("stale_dropped", as_int(s.stale_dropped))?;
    out.insert("resent_unwritten", as_int(s.resent_unwritten))?;
    out.insert("unacknowledged", as_int(s.unacknowledged))?;
    Ok(out)
}

#[php_function]
pub fn cometbox_native_close() {
    conn::close_all();
}

/// `php -i` / phpinfo(): the version and this worker's connections.
pub extern "C" fn php_module_info(_module: *mut ModuleEntry) {
    let s = conn::stats();
    info_table_start!();
    info_table_row!("cometbox support", "enabled");
    info_table_row!("version", VERSION);
    info_table_row!("persistent ingest connections", "one per worker and address");
    info_table_row!("connections opened by this worker", s.connects.to_string().as_str());
    info_table_end!();
}

#[php_module]
pub fn get_module(module: ModuleBuilder) -> ModuleBuilder {
    module
        .name("cometbox")
        .version(VERSION)
        .info_function(php_module_info)
        .function(wrap_function!(cometbox_native_request))
        .function(wrap_function!(cometbox_native_stats))
        .function(wrap_function!(cometbox_native_close))
}
