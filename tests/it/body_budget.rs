//! Request bodies on the public port (Bayeux POSTs) share one budget of
//! bytes in flight (`limits.max_public_body_bytes_in_flight`): many
//! connections declaring large bodies and stalling hold bounded memory,
//! and past the budget new bodies get `503 overloaded`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::wait_until;

/// The default `max_body_bytes`: each connection declares a body of it.
const BODY: usize = 1 << 20;
/// The default budget: 64 bodies of `BODY`.
const BUDGET: usize = 64 << 20;
const CONNECTIONS: usize = 300;

fn head(length: usize) -> String {
    format!(
        "POST /bayeux HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_bounded_memory_and_the_rest_get_503() {
    let server = crate::binary::start(
        "bodies",
        &[
            ("COMETBOX_BAYEUX__ENABLED", "true"),
            // The stalled bodies are held for the whole test.
            ("COMETBOX_LIMITS__REQUEST_TIMEOUT", "120s"),
        ],
    )
    .await;
    let public = server.public.clone();
    let baseline = server.rss_kib();
    let body = Arc::new(vec![b' '; BODY - 1]);
    let refused = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicUsize::new(0));
    for _ in 0..CONNECTIONS {
        let (public, body, refused, written) = (
            public.clone(),
            body.clone(),
            refused.clone(),
            written.clone(),
        );
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&public).await.unwrap();
            // One byte short: the body never completes.
            let sent = async {
                stream.write_all(head(BODY).as_bytes()).await?;
                stream.write_all(&body).await
            };
            let _ = sent.await;
            written.fetch_add(1, Ordering::SeqCst);
            let mut reply = [0u8; 512];
            match stream.read(&mut reply).await {
                Ok(n) if n > 0 => {
                    let reply = String::from_utf8_lossy(&reply[..n]);
                    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
                    assert!(reply.contains("overloaded"), "{reply}");
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                // Held: the read waits until the server stops.
                _ => {}
            }
        });
    }
    // The server's peak, sampled while the connections arrive.
    let peak = Arc::new(AtomicU64::new(baseline));
    let bound = CONNECTIONS - BUDGET / BODY;
    wait_until(
        "the bodies past the budget are refused",
        Duration::from_secs(30),
        || {
            let (refused, written, server) = (refused.clone(), written.clone(), &server);
            let peak = peak.clone();
            async move {
                peak.fetch_max(server.rss_kib(), Ordering::SeqCst);
                written.load(Ordering::SeqCst) == CONNECTIONS
                    && refused.load(Ordering::SeqCst) >= bound
            }
        },
    )
    .await;
    let peak = peak.load(Ordering::SeqCst);
    eprintln!(
        "RSS KiB: baseline {baseline}, peak {peak}; {} of {CONNECTIONS} refused",
        refused.load(Ordering::SeqCst)
    );
    assert!(
        peak <= baseline + (BUDGET as u64 >> 10) + (48 << 10),
        "at most the budget and bookkeeping: peak {peak} KiB, baseline {baseline} KiB"
    );
    // A new body, while the budget is taken: 503 at once.
    let mut late = TcpStream::connect(&server.public).await.unwrap();
    late.write_all(head(100).as_bytes()).await.unwrap();
    let mut reply = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), late.read(&mut reply))
        .await
        .expect("answered at once")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    server.stop().await;
}
