//! The `[[bridge]]` table's checks.

use super::*;

fn table(text: &str) -> BridgeConfig {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("a bridge table")
}

#[test]
fn each_scheme_makes_its_source() {
    let b = table(
        "url = \"stomp://u:p%40ss@127.0.0.1:61000/vh\"\nsource = \"/queue/a\"\nchannel = \"c\"",
    );
    let bridge = b.compile(0, 100).unwrap();
    assert_eq!(
        bridge.source,
        Source::Stomp {
            addr: "127.0.0.1:61000".into(),
            host: "127.0.0.1".into(),
            vhost: "vh".into(),
            login: Some(("u".into(), "p@ss".into())),
            destination: "/queue/a".into(),
        }
    );
    assert_eq!(bridge.shown_url, "stomp://u:***@127.0.0.1:61000/vh");
    assert_eq!(bridge.name, "bridge[0]");
    let b = table("url = \"amqp://localhost\"\nsource = \"ex/key.#\"\nchannel = \"c\"");
    assert!(matches!(
        b.compile(0, 100).unwrap().source,
        Source::Amqp {
            from: AmqpFrom::Exchange { .. },
            ..
        }
    ));
    let b = table("url = \"redis://localhost\"\nsource = \"stream:s\"\nchannel_header = \"ch\"\ngroup = \"g\"");
    assert!(matches!(
        b.compile(0, 100).unwrap().source,
        Source::RedisStream { ref group, ref consumer, .. } if group == "g" && consumer == "cometbox"
    ));
}

#[test]
fn bad_tables_name_their_key() {
    let cases = [
        ("url = \"http://x\"\nsource = \"s\"\nchannel = \"c\"", "url"),
        (
            "url = \"not a url\"\nsource = \"s\"\nchannel = \"c\"",
            "url",
        ),
        (
            "url = \"nats://x\"\nsource = \"\"\nchannel = \"c\"",
            "source",
        ),
        ("url = \"nats://x\"\nsource = \"s\"", "channel"),
        (
            "url = \"nats://x\"\nsource = \"s\"\nchannel = \"bad channel!\"",
            "channel",
        ),
        (
            "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\ntype = \"xml\"",
            "type",
        ),
        (
            "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\ngroup = \"g\"",
            "group",
        ),
        (
            "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\nevent = \"\"",
            "event",
        ),
        (
            "url = \"nats://x\"\nsource = \"s\"\nchannel_header = \"a:b\"",
            "channel_header",
        ),
        (
            "url = \"redis://x\"\nsource = \"stream:\"\nchannel = \"c\"",
            "source",
        ),
        (
            "url = \"amqp://x\"\nsource = \"/key\"\nchannel = \"c\"",
            "source",
        ),
        (
            "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\nmax_backoff = \"1ms\"",
            "max_backoff",
        ),
        (
            "url = \"amqp://x\"\nsource = \"q\"\nchannel = \"c\"\nca_file = \"/etc/hosts\"",
            "ca_file",
        ),
        (
            "url = \"amqps://x\"\nsource = \"q\"\nchannel = \"c\"\nca_file = \"/nonexistent/ca.pem\"",
            "ca_file",
        ),
        (
            "url = \"amqps://x\"\nsource = \"q\"\nchannel = \"c\"\nca_file = \"/etc/hostname\"",
            "ca_file",
        ),
        (
            "url = \"rediss://x\"\nsource = \"q\"\nchannel = \"c\"\nclient_cert = \"/etc/hosts\"",
            "client_key",
        ),
        (
            "url = \"redis://x\"\nsource = \"q\"\nchannel = \"c\"\ntoken = \"t\"",
            "token",
        ),
        (
            "url = \"tls://x\"\nsource = \"jetstream:\"\nchannel = \"c\"",
            "source",
        ),
        (
            "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\nconsumer = \"d\"",
            "consumer",
        ),
        (
            "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\npassword = \"p\"",
            "user",
        ),
        (
            "url = \"stomp+tcp://x\"\nsource = \"s\"\nchannel = \"c\"",
            "url",
        ),
    ];
    for (text, key) in cases {
        let err = table(text).compile(0, 100).unwrap_err();
        assert_eq!(err.0, key, "{text}: {err:?}");
    }
}

#[test]
fn tls_schemes_and_credentials() {
    let b = table(
        "url = \"stomp+ssl://b-1.mq.us-east-1.amazonaws.com\"\nsource = \"/queue/a\"\nchannel = \"c\"\nuser = \"cb\"\npassword = \"s3cret\"",
    );
    let bridge = b.compile(3, 100).unwrap();
    assert!(bridge.tls.is_some());
    assert_eq!(bridge.table, "bridge[3]");
    assert!(matches!(
        bridge.source,
        Source::Stomp { ref addr, ref login, .. }
            if addr == "b-1.mq.us-east-1.amazonaws.com:61614"
            && login.as_ref().is_some_and(|(u, p)| u == "cb" && p.expose() == "s3cret")
    ));
    assert_eq!(
        bridge.shown_url,
        "stomp+ssl://cb:***@b-1.mq.us-east-1.amazonaws.com"
    );
    assert!(!format!("{bridge:?}").contains("s3cret"));
    let b = table(
        "url = \"amqps://guest:guest@h/%2f\"\nsource = \"q\"\nchannel = \"c\"\npassword = \"pw\"",
    );
    let bridge = b.compile(0, 100).unwrap();
    assert!(matches!(bridge.source, Source::Amqp { ref url, .. } if url.password() == Some("pw")));
    let b = table("url = \"tls://h:4222\"\nsource = \"jetstream:ORDERS\"\nchannel = \"c\"\ntoken = \"t0k\"\nconsumer = \"web\"");
    let bridge = b.compile(0, 100).unwrap();
    assert_eq!(
        bridge.source,
        Source::JetStream {
            url: "tls://h:4222".into(),
            auth: NatsAuth::Token("t0k".into()),
            stream: "ORDERS".into(),
            consumer: "web".into(),
        }
    );
    let b = table("url = \"rediss://h\"\nsource = \"stream:s\"\nchannel = \"c\"");
    assert!(b.compile(0, 100).unwrap().tls.is_some());
}
