//! CORS on the public port: preflight and simple requests, allowed and not.

use reqwest::StatusCode;

use crate::helpers::{token, TestServer};

#[tokio::test]
async fn configured_origins_are_answered_and_others_are_not() {
    let server =
        TestServer::with(|s| s.public.cors_origins = vec!["https://app.example".into()]).await;
    let preflight = |origin: &'static str| {
        server
            .http
            .request(reqwest::Method::OPTIONS, server.public_url("/poll"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    assert_eq!(allowed.headers()["cache-control"], "no-store");
    let denied = preflight("https://evil.example").await.unwrap();
    assert!(denied
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    // Said plainly (a browser only shows "CORS error"): 403, naming the
    // setting, not a 405 that lists OPTIONS as allowed.
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body = denied.text().await.unwrap();
    assert!(
        body.contains("cors-forbidden") && body.contains("cors_origins"),
        "{body}"
    );
    // OPTIONS without Origin is no preflight.
    let plain = server
        .http
        .request(reqwest::Method::OPTIONS, server.public_url("/poll"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(plain.headers()["allow"], "GET, HEAD, OPTIONS");

    let poll = server
        .http
        .get(server.public_url(&format!("/poll?timeout=0&token={}", token("c", &[]))))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        poll.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let error = server
        .http
        .get(server.public_url("/poll"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        error.headers()["access-control-allow-origin"],
        "https://app.example",
        "errors are readable cross-origin too"
    );
}

#[tokio::test]
async fn a_star_allows_any_origin_and_none_configured_allows_none() {
    let any = TestServer::with(|s| s.public.cors_origins = vec!["*".into()]).await;
    let reply = any
        .http
        .get(any.public_url("/health"))
        .header("origin", "https://whoever.example")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.headers()["access-control-allow-origin"], "*");
    let none = TestServer::start().await;
    let reply = none
        .http
        .get(none.public_url("/health"))
        .header("origin", "https://whoever.example")
        .send()
        .await
        .unwrap();
    assert!(reply.headers().get("access-control-allow-origin").is_none());
    let preflight = none
        .http
        .request(reqwest::Method::OPTIONS, none.public_url("/poll"))
        .header("origin", "https://whoever.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::FORBIDDEN);
    assert!(preflight.text().await.unwrap().contains("cors_origins"));
}
