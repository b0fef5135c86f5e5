//! One path, one server: a second one refuses to start and names the path;
//! the lock of a SIGKILLed server does not outlive it.

use std::time::Duration;

use serde_json::json;

use crate::damage::post_each;
use crate::harness::{start, token, try_start, Scratch, Spec};

#[tokio::test]
async fn a_second_server_on_the_same_path_refuses_to_start_naming_it() {
    let scratch = Scratch::new("lock");
    let store = scratch.0.join("store");
    let spec = Spec::disk(&store, &scratch.0);
    let first = start(&spec).await;
    assert!(
        store.join("LOCK").exists(),
        "no LOCK file in {}",
        store.display()
    );
    let sent = post_each(&first, "k1", "first", 3).await;

    match try_start(&spec, Duration::from_secs(15)).await {
        Ok(second) => {
            let log = second.kill9().await;
            panic!("a second server started on {}:\n{log}", store.display());
        }
        Err(refused) => {
            let status = refused.status.expect("it exits by itself, not hangs");
            assert!(!status.success(), "non-zero exit, got {status:?}");
            assert!(
                refused.stderr.contains(store.to_str().unwrap()),
                "stderr names {}:\n{}",
                store.display(),
                refused.stderr
            );
        }
    }

    // The first one was not disturbed.
    let t = token("k1", &[]);
    first
        .post_ok(r#"<message to="k1">{"tag":"still"}</message>"#, 1)
        .await;
    let read = first.read_all(&t, None).await;
    let datas: Vec<_> = read.messages.iter().map(|m| m.data.clone()).collect();
    assert_eq!(datas, [sent, vec![json!({"tag": "still"})]].concat());

    // A SIGKILLed holder leaves a LOCK file behind, not a lock.
    first.kill9().await;
    let third = start(&spec).await;
    let again = third.read_all(&t, None).await;
    assert_eq!(again.messages, read.messages);
    third.kill9().await;
}
