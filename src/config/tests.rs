//! Layering and validation of the configuration.

use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn toml_file(text: &str) -> tempfile_lite::TempToml {
    tempfile_lite::TempToml::new(text)
}

/// A scratch TOML file removed on drop (no tempfile crate needed for one use).
mod tempfile_lite {
    use super::*;
    pub struct TempToml(pub PathBuf);
    impl TempToml {
        pub fn new(text: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "cometbox-config-test-{}-{}.toml",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::File::create(&path)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            TempToml(path)
        }
    }
    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn defaults_match_the_contract() {
    let s = load_from(None, env(&[])).unwrap();
    assert_eq!(s.public.listen.to_string(), "0.0.0.0:8480");
    assert_eq!(s.ingest.listen.to_string(), "127.0.0.1:8481");
    assert_eq!(s.limits.poll_timeout, Duration::from_secs(25));
    assert_eq!(s.limits.mailbox_max_messages, 1000);
    assert_eq!(s.store.kind, crate::store::StoreKind::Memory);
}

#[test]
fn file_then_environment() {
    let file = toml_file(
        "[public]\nlisten = \"unix:/tmp/x.sock\"\ncors_origins = [\"https://a.example\"]\n[limits]\npoll_timeout = \"5s\"\nmax_clients = 7\n[store]\n",
    );
    let s = load_from(
        Some(&file.0),
        env(&[
            ("COMETBOX_LIMITS__MAX_CLIENTS", "9"),
            (
                "COMETBOX_PUBLIC__CORS_ORIGINS",
                "https://b.example,https://c.example",
            ),
            ("COMETBOX_INGEST__KEY", "0660"),
        ]),
    )
    .unwrap();
    assert_eq!(s.public.listen, ListenAddr::Unix("/tmp/x.sock".into()));
    assert_eq!(s.limits.poll_timeout, Duration::from_secs(5));
    assert_eq!(s.limits.max_clients, 9);
    assert_eq!(
        s.public.cors_origins,
        vec!["https://b.example", "https://c.example"]
    );
    assert_eq!(s.ingest.key, "0660");
}

#[test]
fn unknown_keys_are_named_with_the_file() {
    let file = toml_file("[limits]\npoll_timeout = \"5s\"\npol_timeout = \"5s\"\n");
    let e = load_from(Some(&file.0), env(&[])).unwrap_err().to_string();
    assert!(
        e.contains("pol_timeout") && e.contains(&file.0.display().to_string()),
        "{e}"
    );
    let e = load_from(None, env(&[("COMETBOX_LIMITS__NOPE", "1")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    // The tools' own variables are not settings, and pass.
    load_from(None, env(&[("COMETBOX_BIN", "/usr/bin/cometbox")])).unwrap();
}

#[test]
fn a_mistyped_variable_is_refused_with_the_setting_it_resembles() {
    // One underscore: it used to be ignored, leaving the ingest port keyless.
    let e = load_from(None, env(&[("COMETBOX_INGEST_KEY", "abc")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("COMETBOX_INGEST_KEY") && e.contains("did you mean COMETBOX_INGEST__KEY?"),
        "{e}"
    );
    let e = load_from(None, env(&[("COMETBOX_AUTH_SECRET", "abc")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("COMETBOX_AUTH__SECRET"), "{e}");
    let e = load_from(None, env(&[("COMETBOX_SECRET", "abc")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("COMETBOX_<SECTION>__<KEY>"), "{e}");
    let e = load_from(None, env(&[("COMETBOX_INGEST__KYE", "abc")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("kye"), "{e}");
    let s = load_from(None, env(&[("COMETBOX_INGEST__KEY", "abc")])).unwrap();
    assert_eq!(s.ingest.key, "abc");
}

#[test]
fn bad_values_name_their_key() {
    for (key, value, named) in [
        ("COMETBOX_LIMITS__POLL_TIMEOUT", "soon", "poll_timeout"),
        ("COMETBOX_LIMITS__POLL_TIMEOUT", "2m", "limits.poll_timeout"),
        ("COMETBOX_LIMITS__MAX_CLIENTS", "0", "limits.max_clients"),
        ("COMETBOX_LIMITS__MAX_CLIENTS", "many", "max_clients"),
        ("COMETBOX_PUBLIC__LISTEN", "nowhere", "listen"),
        ("COMETBOX_PUBLIC__SOCKET_MODE", "999", "socket_mode"),
        (
            "COMETBOX_PUBLIC__CORS_ORIGINS",
            "app.example",
            "public.cors_origins",
        ),
        ("COMETBOX_LOG__FORMAT", "xml", "format"),
        ("COMETBOX_STORE__KIND", "redis", "redis"),
    ] {
        let e = load_from(None, env(&[(key, value)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(named), "{key}={value}: {e}");
    }
}

#[test]
fn a_public_ingest_address_needs_a_key() {
    // IPv6 too: every address, a global one, and an IPv4-mapped loopback
    // (which the rule does not see through: it asks for a key).
    for addr in [
        "0.0.0.0:8481",
        "[::]:8481",
        "[2001:db8::1]:8481",
        "[::ffff:127.0.0.1]:8481",
    ] {
        let e = load_from(None, env(&[("COMETBOX_INGEST__LISTEN", addr)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ingest.listen") && e.contains("ingest.key"),
            "{addr}: {e}"
        );
        load_from(
            None,
            env(&[
                ("COMETBOX_INGEST__LISTEN", addr),
                ("COMETBOX_INGEST__KEY", "k"),
            ]),
        )
        .unwrap();
    }
    for loopback in ["127.0.0.1:8481", "[::1]:8481"] {
        load_from(None, env(&[("COMETBOX_INGEST__LISTEN", loopback)])).unwrap();
    }
}

#[test]
fn a_whitespace_key_is_no_key() {
    let e = load_from(
        None,
        env(&[
            ("COMETBOX_INGEST__LISTEN", "0.0.0.0:8481"),
            ("COMETBOX_INGEST__KEY", "   "),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ingest.key") && e.contains("whitespace"), "{e}");
    let e = load_from(None, env(&[("COMETBOX_INGEST__KEY", " k")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ingest.key"), "{e}");
}

#[test]
fn hostile_client_limits_default_and_validate() {
    let s = load_from(None, env(&[])).unwrap();
    assert_eq!(s.limits.max_header_bytes, 16384);
    assert_eq!(s.limits.send_timeout, Duration::from_secs(30));
    assert_eq!(s.limits.max_ingest_connections, 1024);
    assert_eq!(s.limits.max_public_body_bytes_in_flight, 64 << 20);
    let file = toml_file(
        "[limits]\nmax_header_bytes = 32768\nsend_timeout = \"5s\"\nmax_ingest_connections = 8\n",
    );
    let s = load_from(Some(&file.0), env(&[])).unwrap();
    assert_eq!(s.limits.max_header_bytes, 32768);
    assert_eq!(s.limits.send_timeout, Duration::from_secs(5));
    assert_eq!(s.limits.max_ingest_connections, 8);
    for (key, value, named) in [
        (
            "COMETBOX_LIMITS__MAX_HEADER_BYTES",
            "4096",
            "limits.max_header_bytes",
        ),
        ("COMETBOX_LIMITS__SEND_TIMEOUT", "0s", "limits.send_timeout"),
        ("COMETBOX_LIMITS__SEND_TIMEOUT", "later", "send_timeout"),
        (
            "COMETBOX_LIMITS__MAX_INGEST_CONNECTIONS",
            "0",
            "limits.max_ingest_connections",
        ),
        (
            "COMETBOX_LIMITS__MAX_PUBLIC_BODY_BYTES_IN_FLIGHT",
            "1000",
            "limits.max_public_body_bytes_in_flight",
        ),
    ] {
        let e = load_from(None, env(&[(key, value)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(named), "{key}={value}: {e}");
    }
}

#[test]
fn redis_store_settings_are_checked_at_start_up() {
    let file = toml_file(
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/2\"\ntimeout = \"500ms\"\n",
    );
    let s = load_from(Some(&file.0), env(&[])).unwrap();
    assert_eq!(s.store.kind, crate::store::StoreKind::Redis);
    assert_eq!(s.store.timeout, Duration::from_millis(500));
    assert_eq!(s.store.key_prefix, "cometbox:");
    // A cluster by its seed nodes, from the file or (comma-separated) the
    // environment.
    let file = toml_file(
        "[store]\nkind = \"redis\"\ncluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\n",
    );
    let s = load_from(Some(&file.0), env(&[])).unwrap();
    assert_eq!(s.store.cluster.len(), 2);
    let s = load_from(
        None,
        env(&[
            ("COMETBOX_STORE__KIND", "redis"),
            ("COMETBOX_STORE__CLUSTER", "redis://a:7000, redis://b:7001"),
        ]),
    )
    .unwrap();
    assert_eq!(s.store.cluster, ["redis://a:7000", "redis://b:7001"]);
    for (text, key) in [
        (
            "[store]\nkind = \"redis\"\ncluster = [\"http://b:7000\"]\n",
            "store.cluster",
        ),
        (
            "[store]\nkind = \"redis\"\nurl = \"redis://a\"\nkey_prefix = \"x{y}\"\n",
            "store.key_prefix",
        ),
        (
            "[store]\nkind = \"redis\"\nurl = \"rediss://a\"\ntls_ca = \"/nonexistent/ca.pem\"\n",
            "store.tls_ca",
        ),
        ("[store]\nkind = \"redis\"\n", "store.url"),
        (
            "[store]\nkind = \"redis\"\nurl = \"http://x\"\n",
            "store.url",
        ),
        (
            "[store]\nkind = \"redis\"\nurl = \"redis://a\"\ncluster = [\"redis://b:7000\"]\n",
            "store.cluster",
        ),
        (
            "[store]\nkind = \"redis\"\nurl = \"redis://a\"\ntimeout = \"0s\"\n",
            "store.timeout",
        ),
    ] {
        let file = toml_file(text);
        let e = load_from(Some(&file.0), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains(key) && e.contains(&file.0.display().to_string()),
            "{text}: {e}"
        );
    }
}

#[test]
fn bridge_tables_are_read_and_a_bad_one_is_named_with_the_file() {
    let good = "[[bridge]]\nurl = \"nats://127.0.0.1:4222\"\nsource = \"a.>\"\nchannel = \"a\"\n";
    let file = toml_file(good);
    let s = load_from(Some(&file.0), env(&[])).unwrap();
    assert_eq!(s.bridge.len(), 1);
    assert_eq!(s.bridge[0].source, "a.>");
    for (second, named) in [
        (
            "[[bridge]]\nurl = \"http://x\"\nsource = \"s\"\nchannel = \"c\"\n",
            "bridge[1].url",
        ),
        (
            "[[bridge]]\nurl = \"redis://x\"\nsource = \"s\"\n",
            "bridge[1].channel",
        ),
        (
            "[[bridge]]\nname = \"bridge[0]\"\nurl = \"redis://x\"\nsource = \"s\"\nchannel = \"c\"\n",
            "bridge[1].name",
        ),
        (
            "[[bridge]]\nurl = \"redis://x\"\nsource = \"s\"\nchannel = \"c\"\nqueue = \"q\"\n",
            "queue",
        ),
    ] {
        let file = toml_file(&format!("{good}{second}"));
        let e = load_from(Some(&file.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains(named), "{second}: {e}");
        assert!(e.contains(&file.0.display().to_string()), "{e}");
    }
}

#[test]
fn hooks_are_off_by_default_and_read_from_file_and_environment() {
    use crate::hooks::{EventType, OnError};
    let s = load_from(None, env(&[])).unwrap();
    assert!(!s.hooks.enabled());
    assert_eq!(s.hooks.offline_after, Duration::from_secs(15));
    assert_eq!(s.hooks.events, EventType::ALL.to_vec());
    let file = toml_file(
        "[hooks]\nurl = \"unix:/run/app/hooks.sock\"\nsecret = \"s\"\ntimeout = \"500ms\"\non_error = \"allow\"\nevents = [\"connect\", \"offline\"]\n",
    );
    let s = load_from(Some(&file.0), env(&[])).unwrap();
    assert_eq!(s.hooks.timeout, Duration::from_millis(500));
    assert_eq!(s.hooks.on_error, OnError::Allow);
    assert_eq!(s.hooks.events, vec![EventType::Connect, EventType::Offline]);
    let s = load_from(
        None,
        env(&[
            ("COMETBOX_HOOKS__URL", "http://127.0.0.1:9000/hook"),
            ("COMETBOX_HOOKS__SECRET", "s"),
            ("COMETBOX_HOOKS__EVENTS", "online, offline"),
        ]),
    )
    .unwrap();
    assert_eq!(s.hooks.events, vec![EventType::Online, EventType::Offline]);
}

#[test]
fn bad_hooks_name_their_key() {
    let refused = |pairs: &[(&str, &str)], key: &str| {
        let e = load_from(None, env(pairs)).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    };
    refused(&[("COMETBOX_HOOKS__URL", "http://x/")], "hooks.secret");
    refused(
        &[
            ("COMETBOX_HOOKS__URL", "https://x/"),
            ("COMETBOX_HOOKS__SECRET", "s"),
        ],
        "hooks.url",
    );
    refused(
        &[
            ("COMETBOX_HOOKS__URL", "http://x/"),
            ("COMETBOX_HOOKS__SECRET", "s"),
            ("COMETBOX_HOOKS__TIMEOUT", "0s"),
        ],
        "hooks.timeout",
    );
    refused(
        &[("COMETBOX_HOOKS__EVENTS", "online,sometimes")],
        "hooks.events",
    );
    refused(&[("COMETBOX_HOOKS__ON_ERROR", "maybe")], "on_error");
}

#[test]
fn bridges_can_be_set_from_the_environment() {
    let file =
        toml_file("[[bridge]]\nurl = \"nats://127.0.0.1:4222\"\nsource = \"a\"\nchannel = \"c\"\n");
    let s = load_from(
        Some(&file.0),
        env(&[
            ("COMETBOX_BRIDGE__0__SOURCE", "orders"),
            ("COMETBOX_BRIDGE__1__URL", "redis://127.0.0.1:6379"),
            ("COMETBOX_BRIDGE__1__SOURCE", "stream:events"),
            ("COMETBOX_BRIDGE__1__CHANNEL", "news"),
        ]),
    )
    .unwrap();
    assert_eq!(s.bridge.len(), 2);
    assert_eq!(
        s.bridge[0].source, "orders",
        "the file's table, one key replaced"
    );
    assert_eq!(s.bridge[0].url, "nats://127.0.0.1:4222");
    assert_eq!(s.bridge[1].url, "redis://127.0.0.1:6379");
    let e = load_from(None, env(&[("COMETBOX_BRIDGE__URL", "nats://x")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("COMETBOX_BRIDGE__0__URL"), "{e}");
    let e = load_from(None, env(&[("COMETBOX_BRIDGE__0__URL", "http://x")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bridge[0]"), "{e}");
}

#[test]
fn pusher_is_off_by_default_and_read_from_file_and_environment() {
    let s = load_from(None, env(&[])).unwrap();
    assert!(!s.pusher.enabled);
    assert_eq!(
        (s.pusher.app_id.as_str(), s.pusher.key.as_str()),
        ("cometbox", "app-key")
    );
    assert!(s.summary().contains(&"pusher: off".to_string()));
    let file = toml_file("[pusher]\nenabled = true\napp_id = \"42\"\nsecret = \"from-file\"\n");
    let s = load_from(
        Some(&file.0),
        env(&[
            ("COMETBOX_PUSHER__KEY", "k1"),
            ("COMETBOX_PUSHER__CLIENT_EVENTS", "true"),
        ]),
    )
    .unwrap();
    assert!(s.pusher.enabled && s.pusher.client_events);
    assert_eq!(s.pusher.app_id, "42");
    assert_eq!(s.pusher.key, "k1");
    assert_eq!(s.pusher.secret, "from-file");
    let summary = s.summary().join("\n");
    assert!(
        summary.contains("pusher: on, app id \"42\", key \"k1\""),
        "{summary}"
    );
    assert!(!summary.contains("from-file"), "{summary}");
    assert!(!format!("{s:?}").contains("from-file"));
}

#[test]
fn bad_pusher_settings_name_their_key() {
    let refused = |pairs: &[(&str, &str)], key: &str| {
        let e = load_from(None, env(pairs)).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    };
    let on = ("COMETBOX_PUSHER__ENABLED", "true");
    refused(&[on, ("COMETBOX_PUSHER__SECRET", "")], "pusher.secret");
    refused(&[on, ("COMETBOX_PUSHER__KEY", "")], "pusher.key");
    refused(
        &[
            on,
            ("COMETBOX_INGEST__LISTEN", "0.0.0.0:8481"),
            ("COMETBOX_INGEST__KEY", "k"),
        ],
        "pusher.secret",
    );
    refused(&[("COMETBOX_PUSHER_KEY", "k")], "COMETBOX_PUSHER__KEY");
    let file = toml_file("[pusher]\nenabled = true\nsecrett = \"x\"\n");
    let e = load_from(Some(&file.0), env(&[])).unwrap_err().to_string();
    assert!(e.contains("secrett"), "{e}");
}
