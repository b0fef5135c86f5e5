//! `rediss://`: nodes talk to a redis-server over TLS (its `tls-port`, a
//! certificate made by `openssl` in the test's directory and signed by a
//! test authority that `store.tls_ca` names). A node without `tls_ca`
//! checks the server against the system's authorities, which do not know
//! the test authority: it refuses the server (503), never talks in clear.

use std::path::Path;
use std::process::Command;

use crate::harness::{token, wait_until, Scratch};
use crate::nodes::{ids, node, poll_ok, PROMPT};
use crate::redis_server::{free_port, Persistence, RedisServer};

/// A test authority and a server certificate for 127.0.0.1 signed by it,
/// in `dir`: `ca.pem`, `server.pem`, `server.key`.
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cometbox-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_reach_redis_over_tls() {
    let dir = Scratch::new("tls");
    let certs = dir.0.join("certs");
    make_certificates(&certs);
    let tls_port = free_port();
    let path = |name: &str| certs.join(name).to_str().unwrap().to_owned();
    let redis = RedisServer::start_with(
        &dir.0.join("redis"),
        Persistence::None,
        None,
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path("server.pem"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    )
    .await;
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let ca = path("ca.pem");
    let with_ca = [("COMETBOX_STORE__TLS_CA", ca.as_str())];
    let a = node(&url, &dir.0, &with_ca).await;
    let b = node(&url, &dir.0, &with_ca).await;
    // A poll held on b over TLS is woken by a post on a (the pub/sub
    // connection is TLS too).
    let gus = token("gus", &[]);
    let cursor = poll_ok(&b, &gus, "timeout=0").await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let held = {
        let url = format!(
            "http://{}/poll?token={gus}&since={cursor}&timeout=30",
            b.public
        );
        let http = b.http.clone();
        tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
    };
    wait_until("the held poll is open", PROMPT, || async {
        crate::nodes::stats(&b).await["open_polls"] == 1
    })
    .await;
    a.post_ok(r#"<message to="gus">{"over":"tls"}</message>"#, 1)
        .await;
    let body = tokio::time::timeout(PROMPT, held)
        .await
        .expect("woken")
        .unwrap();
    assert!(body.contains(r#""over":"tls""#), "{body}");
    let body = poll_ok(&a, &gus, "timeout=0").await;
    assert_eq!(ids(&body).len(), 1, "{body}");
    // What went over the wire is in the server (seen on its plain port).
    let keys = redis.command(&["KEYS", "cometbox:m:gus"]).await.unwrap();
    assert!(
        matches!(keys, redis::Value::Array(ref k) if k.len() == 1),
        "{keys:?}"
    );

    // Without the test authority, the server's certificate is refused.
    let c = node(&url, &dir.0, &[]).await;
    let (status, body) = c.post(r#"<message to="gus">1</message>"#).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage-unavailable"), "{body}");
}
