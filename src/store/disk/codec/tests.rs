//! The codec's tests: changes round-trip through a frame, torn and
//! damaged frames are told apart, and damaged payloads never panic or
//! allocate wildly.

use super::*;

fn id(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

/// A [`Change`] with every field comparable: a message's expiry as the
/// wall-clock milliseconds the journal keeps (an `Instant` does not
/// survive a restart, so it is stored at that precision).
#[derive(Debug, PartialEq)]
enum Plain {
    Created(ClientId, u32),
    Message {
        json_tail: String,
        expires_ms: u64,
        own_ttl: bool,
        recipients: Vec<(ClientId, u32, u64)>,
    },
    Subscribed(ClientId, u32, ChannelName),
    Unsubscribed(ClientId, u32, ChannelName, u64),
    Gone(ClientId, u32),
    Active(Vec<(ClientId, u32, SystemTime)>),
}

fn plain(changes: &[Change], clock: Clock) -> Vec<Plain> {
    changes
        .iter()
        .map(|change| match change.clone() {
            Change::Created { client, epoch } => Plain::Created(client, epoch),
            Change::Message {
                message,
                recipients,
            } => Plain::Message {
                json_tail: message.json_tail.to_string(),
                expires_ms: clock.to_wall(message.expires_at),
                own_ttl: message.own_ttl,
                recipients,
            },
            Change::Subscribed {
                client,
                epoch,
                channel,
            } => Plain::Subscribed(client, epoch, channel),
            Change::Unsubscribed {
                client,
                epoch,
                channel,
                at,
            } => Plain::Unsubscribed(client, epoch, channel, at),
            Change::Gone { client, epoch } => Plain::Gone(client, epoch),
            Change::Active { clients } => Plain::Active(clients),
        })
        .collect()
}

#[test]
fn changes_round_trip_through_a_frame() {
    let clock = Clock::now();
    let message = Arc::new(StoredMessage::new(
        r#""data":{"k":"ü"},"ts":1}"#.into(),
        Instant::now() + Duration::from_secs(60),
        true,
    ));
    let room = ChannelName::parse("room:1").unwrap();
    let changes = vec![
        Change::Created {
            client: id("a"),
            epoch: 7,
        },
        Change::Message {
            message: message.clone(),
            recipients: vec![(id("a"), 7, 1), (id("b"), u32::MAX, u64::MAX)],
        },
        Change::Subscribed {
            client: id("a"),
            epoch: 7,
            channel: room.clone(),
        },
        Change::Unsubscribed {
            client: id("a"),
            epoch: 7,
            channel: room,
            at: 1_700_000_000,
        },
        Change::Gone {
            client: id("b"),
            epoch: 9,
        },
        Change::Active {
            clients: vec![(id("a"), 7, system_time(1_763_712_000_123))],
        },
    ];
    let mut bytes = Vec::new();
    frame(&mut bytes, Kind::Unit, |out| {
        put_changes(out, &changes, clock)
    });
    let Framed::Record(payload, len) = read_frame(&bytes) else {
        panic!("a whole record")
    };
    assert_eq!(len, bytes.len());
    let mut r = Reader::new(payload);
    assert_eq!(r.byte().unwrap(), Kind::Unit as u8);
    let (written, back) = read_changes(&mut r, clock).unwrap();
    assert_eq!(written, clock.wall_ms);
    assert!(r.is_empty());
    assert_eq!(plain(&back, clock), plain(&changes, clock));
    let Change::Message { message: m, .. } = &back[1] else {
        panic!("{back:?}")
    };
    let drift = m.expires_at.max(message.expires_at) - m.expires_at.min(message.expires_at);
    assert!(drift <= Duration::from_millis(1), "{drift:?}");
}

#[test]
fn torn_and_damaged_frames_are_told_apart() {
    let mut bytes = Vec::new();
    frame(&mut bytes, Kind::Probe, |_| {});
    frame(&mut bytes, Kind::Probe, |out| out.extend_from_slice(b"xyz"));
    let first = match read_frame(&bytes) {
        Framed::Record(_, len) => len,
        other => panic!("{other:?}"),
    };
    for cut in first + 1..bytes.len() {
        assert_eq!(
            read_frame(&bytes[first..cut]),
            Framed::Short,
            "cut at {cut}"
        );
    }
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(read_frame(&flipped[first..]), Framed::Damaged);
    assert_eq!(find_magic(&flipped, 1), Some(first));
}

#[test]
fn damaged_payloads_never_panic_or_allocate_wildly() {
    let clock = Clock::now();
    let changes = vec![Change::Message {
        message: Arc::new(StoredMessage::new("x".into(), Instant::now(), false)),
        recipients: vec![(id("a"), 1, 1); 3],
    }];
    let mut payload = Vec::new();
    put_changes(&mut payload, &changes, clock);
    for i in 0..payload.len() {
        for b in [0u8, 0x7f, 0x80, 0xff] {
            let mut bad = payload.clone();
            bad[i] = b;
            let _ = read_changes(&mut Reader::new(&bad), clock);
            let _ = read_changes(&mut Reader::new(&bad[..i]), clock);
        }
    }
}
