//! Batches are all or nothing: a `<batch>` that a limit refuses part-way
//! (`max_clients`, `max_channels_per_client`; the refused command last, or
//! in the middle) is answered with the limit's status and code and leaves
//! no effect anywhere: no message delivered, no subscription, no client
//! created, no figure moved. Its clients live in several slot groups, so on
//! a Redis Cluster this is the `check`/`force` path (every group's share
//! checked before any applies); the same batch within the limits is then
//! applied whole, in every group.

use serde_json::{json, Value};

use crate::harness::token;
use crate::nodes::poll_ok;

use super::fixture::{Fixture, Node};
use super::looks::{groups_spanned, observe, presence, refusal, spread};

/// One refusal: what the batch holds, and the status and code expected.
struct Refused {
    what: &'static str,
    commands: Vec<String>,
    status: u16,
    code: &'static str,
}

fn message_to(client: &str, i: usize) -> String {
    format!(r#"<message to="{client}">{{"i":{i}}}</message>"#)
}

fn subscribe(client: &str, channel: &str) -> String {
    format!(r#"<subscribe client="{client}" channel="{channel}"/>"#)
}

const ROOM_MESSAGE: &str = r#"<message channel="room">{"i":100}</message>"#;

fn batch(commands: &[String]) -> String {
    format!("<batch>{}</batch>", commands.concat())
}

/// What every refusal check starts from, with `max_clients` 8 and
/// `max_channels_per_client` 2: four members of `room` and one client at
/// its channel limit (five clients), and four ids not used yet, all in
/// different slot groups.
struct Setup {
    members: Vec<String>,
    new: Vec<String>,
}

const FULL: &str = "full";

impl Setup {
    async fn on(fx: &Fixture) -> (Node, Setup) {
        let n = fx
            .node(&[
                ("COMETBOX_LIMITS__MAX_CLIENTS", "8"),
                ("COMETBOX_LIMITS__MAX_CHANNELS_PER_CLIENT", "2"),
            ])
            .await;
        let setup = Setup {
            members: spread("m", 4),
            new: spread("n", 4),
        };
        let mut joins: Vec<String> = setup.members.iter().map(|m| subscribe(m, "room")).collect();
        joins.extend([subscribe(FULL, "a"), subscribe(FULL, "b")]);
        n.post_ok(&batch(&joins), joins.len()).await;
        assert!(
            groups_spanned(setup.watched()) >= 6,
            "{:?}",
            setup.watched().collect::<Vec<_>>()
        );
        (n, setup)
    }

    /// Every client a refused batch could have touched.
    fn watched(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .chain(&self.new)
            .map(String::as_str)
            .chain([FULL])
    }

    /// Messages to the first three new clients (room for three more).
    fn three_new(&self) -> Vec<String> {
        self.new[..3]
            .iter()
            .enumerate()
            .map(|(i, c)| message_to(c, i))
            .collect()
    }

    /// Posts each case, checks its status and code, and that a backend
    /// can see no change at all.
    async fn refuse_each(&self, n: &Node, cases: &[Refused]) {
        let watched: Vec<&str> = self.watched().collect();
        let before = observe(n, &watched).await;
        for case in cases {
            let got = refusal(n, &batch(&case.commands)).await;
            assert_eq!(got, (case.status, case.code.to_owned()), "{}", case.what);
            let after = observe(n, &watched).await;
            assert_eq!(
                after, before,
                "{}: the refused batch changed something",
                case.what
            );
        }
    }

    /// Each member's pending messages, in order.
    async fn pending(&self, n: &Node) -> Vec<Value> {
        let mut pending = Vec::new();
        for member in &self.members {
            pending.push(presence(n, member).await.unwrap()["pending_messages"].clone());
        }
        pending
    }
}

/// A batch that would pass `max_clients` is refused with `503 overloaded`,
/// whether the client too many comes last or in the middle, and applies
/// nothing; without that client it is applied whole.
pub async fn a_batch_over_max_clients_applies_nothing(fx: Fixture) {
    let (n, setup) = Setup::on(&fx).await;
    let (members, new) = (&setup.members, &setup.new);
    let first = [
        vec![ROOM_MESSAGE.to_owned(), message_to(&members[0], 1)],
        vec![subscribe(&members[1], "other")],
        setup.three_new(),
    ]
    .concat();
    let cases = [
        Refused {
            what: "max_clients, refused last",
            commands: [first.clone(), vec![message_to(&new[3], 3)]].concat(),
            status: 503,
            code: "overloaded",
        },
        Refused {
            what: "max_clients, refused in the middle",
            commands: [
                setup.three_new(),
                vec![message_to(&new[3], 3), ROOM_MESSAGE.to_owned()],
                vec![subscribe(&members[2], "other"), message_to(&members[3], 4)],
            ]
            .concat(),
            status: 503,
            code: "overloaded",
        },
    ];
    setup.refuse_each(&n, &cases).await;
    n.post_ok(&batch(&first), first.len()).await;
    let n = fx.checkpoint(n).await;
    assert_eq!(setup.pending(&n).await, [2, 1, 1, 1]);
    let m1 = presence(&n, &members[1]).await.unwrap();
    assert_eq!(m1["channels"], json!(["other", "room"]), "{m1}");
    for client in &new[..3] {
        let body = poll_ok(&n, &token(client, &[]), "timeout=0").await;
        assert_eq!(
            body["messages"].as_array().unwrap().len(),
            1,
            "{client}: {body}"
        );
    }
    assert_eq!(
        presence(&n, &new[3]).await,
        None,
        "{} was not in it",
        new[3]
    );
}

/// A batch that would give a client more than `max_channels_per_client`
/// is refused with `413 too-large`, whether that `<subscribe>` comes last
/// or in the middle, and applies nothing; without it it is applied whole.
pub async fn a_batch_over_max_channels_applies_nothing(fx: Fixture) {
    let (n, setup) = Setup::on(&fx).await;
    let (members, new) = (&setup.members, &setup.new);
    let first = vec![
        ROOM_MESSAGE.to_owned(),
        message_to(&new[0], 0),
        subscribe(&members[0], "other"),
    ];
    let cases = [
        Refused {
            what: "max_channels_per_client, refused last",
            commands: [first.clone(), vec![subscribe(FULL, "c")]].concat(),
            status: 413,
            code: "too-large",
        },
        Refused {
            what: "max_channels_per_client, refused in the middle",
            commands: vec![
                message_to(&new[1], 1),
                subscribe(&members[2], "x"),
                subscribe(&members[2], "y"),
                ROOM_MESSAGE.to_owned(),
                subscribe(&new[2], "room"),
            ],
            status: 413,
            code: "too-large",
        },
    ];
    setup.refuse_each(&n, &cases).await;
    n.post_ok(&batch(&first), first.len()).await;
    let n = fx.checkpoint(n).await;
    assert_eq!(setup.pending(&n).await, [1, 1, 1, 1]);
    let m0 = presence(&n, &members[0]).await.unwrap();
    assert_eq!(m0["channels"], json!(["other", "room"]), "{m0}");
    let full = presence(&n, FULL).await.unwrap();
    assert_eq!(full["channels"], json!(["a", "b"]), "{full}");
    let body = poll_ok(&n, &token(&new[0], &[]), "timeout=0").await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");
}
