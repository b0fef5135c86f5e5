//! The journal's bytes: record framing and the encoding of [`Change`]s and
//! snapshot entries. Pure functions, no I/O.
//!
//! A record is `MAGIC (4) | length (u32 LE) | crc32 of the payload (u32 LE)
//! | payload`. The magic lets recovery find the next record after a
//! damaged one without trusting the damaged length; the checksum tells a
//! whole record from a torn or corrupted one. Integers in payloads are
//! LEB128 varints, strings are a varint length and UTF-8 bytes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::protocol::{ChannelName, ClientId};
use crate::store::journal::Change;
use crate::store::{SharedMessage, StoredMessage};

/// Starts every record.
pub const MAGIC: [u8; 4] = *b"CBR1";
/// Magic, length and checksum.
pub const FRAME_HEADER: usize = 12;
/// No record is larger (a unit's changes, or one snapshot entry); a length
/// beyond it is damage.
pub const MAX_RECORD: usize = 256 << 20;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The changes of one submitted unit.
    Unit = 1,
    /// Snapshot: one message, shared by the snapshot's clients by index.
    SnapshotMessage = 2,
    /// Snapshot: one client.
    SnapshotClient = 3,
    /// Written to check that the disk takes writes again; carries nothing.
    Probe = 4,
}

/// Appends one framed record.
pub fn frame(out: &mut Vec<u8>, kind: Kind, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.push(kind as u8);
    body(out);
    let payload = &out[start + FRAME_HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// What reading a record at some offset found.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A whole record: its kind byte and the rest of its payload, and its
    /// total length.
    Record(&'a [u8], usize),
    /// The bytes end before the record does (a torn tail, if at the end).
    Short,
    /// Not a record: wrong magic, impossible length, or a checksum
    /// mismatch.
    Damaged,
}

/// Reads the record that starts at the beginning of `bytes`.
pub fn read_frame(bytes: &[u8]) -> Framed<'_> {
    if bytes.len() < FRAME_HEADER {
        return if MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            Framed::Short
        } else {
            Framed::Damaged
        };
    }
    if bytes[..4] != MAGIC {
        return Framed::Damaged;
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD {
        return Framed::Damaged;
    }
    let Some(payload) = bytes.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Framed::Short;
    };
    if crc32fast::hash(payload) != crc {
        return Framed::Damaged;
    }
    Framed::Record(payload, FRAME_HEADER + len)
}

/// Where the next record's magic stands after `from`, if anywhere.
pub fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(4)
        .position(|w| w == MAGIC)
        .map(|at| from + at)
}

/// Converts between the process's monotonic clock (what the hub uses) and
/// wall-clock milliseconds (what survives a restart).
#[derive(Clone, Copy)]
pub struct Clock {
    mono: Instant,
    wall_ms: u64,
}

impl Clock {
    /// The clocks as they read now.
    pub fn now() -> Self {
        Clock {
            mono: Instant::now(),
            wall_ms: unix_ms(SystemTime::now()),
        }
    }

    /// An instant as wall-clock milliseconds.
    pub fn to_wall(self, at: Instant) -> u64 {
        if at >= self.mono {
            self.wall_ms + (at - self.mono).as_millis() as u64
        } else {
            self.wall_ms
                .saturating_sub((self.mono - at).as_millis() as u64)
        }
    }

    /// Wall-clock milliseconds as an instant (clamped to what `Instant` can
    /// hold: something long past is "an hour ago or earlier").
    pub fn to_instant(self, wall_ms: u64) -> Instant {
        if wall_ms >= self.wall_ms {
            self.mono + Duration::from_millis(wall_ms - self.wall_ms)
        } else {
            let ago = Duration::from_millis(self.wall_ms - wall_ms);
            self.mono
                .checked_sub(ago)
                .or_else(|| self.mono.checked_sub(Duration::from_secs(3600)))
                .unwrap_or(self.mono)
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Wall-clock milliseconds as a `SystemTime`.
pub fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

// ---- writing ----

pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_message(out: &mut Vec<u8>, message: &StoredMessage, clock: Clock) {
    put_str(out, &message.json_tail);
    put_varint(out, clock.to_wall(message.expires_at));
    out.push(u8::from(message.own_ttl));
}

/// The payload of a unit record (after its kind byte): when it was written
/// (wall-clock milliseconds), then its changes.
pub fn put_changes(out: &mut Vec<u8>, changes: &[Change], clock: Clock) {
    put_varint(out, clock.wall_ms);
    put_varint(out, changes.len() as u64);
    for change in changes {
        put_change(out, change, clock);
    }
}

/// One change: its tag byte, then its fields.
fn put_change(out: &mut Vec<u8>, change: &Change, clock: Clock) {
    match change {
        Change::Created { client, epoch } => {
            out.push(1);
            put_mailbox(out, client, *epoch);
        }
        Change::Message {
            message,
            recipients,
        } => {
            out.push(2);
            put_message(out, message, clock);
            put_varint(out, recipients.len() as u64);
            for (client, epoch, seq) in recipients {
                put_mailbox(out, client, *epoch);
                put_varint(out, *seq);
            }
        }
        Change::Subscribed {
            client,
            epoch,
            channel,
        } => {
            out.push(3);
            put_mailbox(out, client, *epoch);
            put_str(out, channel.as_str());
        }
        Change::Unsubscribed {
            client,
            epoch,
            channel,
            at,
        } => {
            out.push(4);
            put_mailbox(out, client, *epoch);
            put_str(out, channel.as_str());
            put_varint(out, *at);
        }
        Change::Gone { client, epoch } => {
            out.push(5);
            put_mailbox(out, client, *epoch);
        }
        Change::Active { clients } => {
            out.push(6);
            put_varint(out, clients.len() as u64);
            for (client, epoch, at) in clients {
                put_mailbox(out, client, *epoch);
                put_varint(out, unix_ms(*at));
            }
        }
    }
}

/// A mailbox incarnation, as every change names it: the client's id, then
/// its epoch.
fn put_mailbox(out: &mut Vec<u8>, client: &ClientId, epoch: u32) {
    put_str(out, client.as_str());
    put_varint(out, epoch.into());
}

/// A snapshot's message record: its index and the message.
pub fn put_snapshot_message(out: &mut Vec<u8>, index: u64, message: &StoredMessage, clock: Clock) {
    put_varint(out, index);
    put_message(out, message, clock);
}

/// A client as a snapshot holds it; messages are snapshot indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotClient {
    pub id: ClientId,
    pub epoch: u32,
    pub first_seq: u64,
    pub lost_through: u64,
    pub last_active_ms: u64,
    pub channels: Vec<ChannelName>,
    pub revoked: Vec<(ChannelName, u64)>,
    pub messages: Vec<u64>,
}

pub fn put_snapshot_client(out: &mut Vec<u8>, c: &SnapshotClient) {
    put_str(out, c.id.as_str());
    put_varint(out, c.epoch.into());
    put_varint(out, c.first_seq);
    put_varint(out, c.lost_through);
    put_varint(out, c.last_active_ms);
    put_varint(out, c.channels.len() as u64);
    for channel in &c.channels {
        put_str(out, channel.as_str());
    }
    put_varint(out, c.revoked.len() as u64);
    for (channel, at) in &c.revoked {
        put_str(out, channel.as_str());
        put_varint(out, *at);
    }
    put_varint(out, c.messages.len() as u64);
    for index in &c.messages {
        put_varint(out, *index);
    }
}

// ---- reading ----

/// A payload that does not decode: damage that the checksum did not catch,
/// or a record of a newer version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable record: {0}")]
pub struct Undecodable(pub &'static str);

/// Reads a payload front to back.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    pub fn byte(&mut self) -> Result<u8, Undecodable> {
        let (&b, rest) = self.0.split_first().ok_or(Undecodable("truncated"))?;
        self.0 = rest;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, Undecodable> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Undecodable("varint too long"))
    }

    fn count(&mut self) -> Result<usize, Undecodable> {
        let n = self.varint()?;
        // Every counted item takes at least a byte: a count beyond what is
        // left is damage, and must not become a huge allocation.
        if n > self.0.len() as u64 {
            return Err(Undecodable("count beyond the record"));
        }
        Ok(n as usize)
    }

    fn u32(&mut self) -> Result<u32, Undecodable> {
        u32::try_from(self.varint()?).map_err(|_| Undecodable("epoch out of range"))
    }

    pub fn str(&mut self) -> Result<&'a str, Undecodable> {
        let len = self.count()?;
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(s).map_err(|_| Undecodable("not UTF-8"))
    }

    fn client(&mut self) -> Result<ClientId, Undecodable> {
        ClientId::parse(self.str()?).map_err(|_| Undecodable("bad client id"))
    }

    fn channel(&mut self) -> Result<ChannelName, Undecodable> {
        ChannelName::parse(self.str()?).map_err(|_| Undecodable("bad channel name"))
    }

    fn message(&mut self, clock: Clock) -> Result<SharedMessage, Undecodable> {
        let json_tail = self.str()?.into();
        let expires_at = clock.to_instant(self.varint()?);
        let own_ttl = self.byte()? != 0;
        Ok(Arc::new(StoredMessage::new(json_tail, expires_at, own_ttl)))
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Decodes a unit record's payload (after its kind byte): when it was
/// written, and its changes.
pub fn read_changes(r: &mut Reader<'_>, clock: Clock) -> Result<(u64, Vec<Change>), Undecodable> {
    let written_ms = r.varint()?;
    let n = r.count()?;
    let mut changes = Vec::with_capacity(n);
    for _ in 0..n {
        changes.push(match r.byte()? {
            1 => Change::Created {
                client: r.client()?,
                epoch: r.u32()?,
            },
            2 => {
                let message = r.message(clock)?;
                let count = r.count()?;
                let mut recipients = Vec::with_capacity(count);
                for _ in 0..count {
                    recipients.push((r.client()?, r.u32()?, r.varint()?));
                }
                Change::Message {
                    message,
                    recipients,
                }
            }
            3 => Change::Subscribed {
                client: r.client()?,
                epoch: r.u32()?,
                channel: r.channel()?,
            },
            4 => Change::Unsubscribed {
                client: r.client()?,
                epoch: r.u32()?,
                channel: r.channel()?,
                at: r.varint()?,
            },
            5 => Change::Gone {
                client: r.client()?,
                epoch: r.u32()?,
            },
            6 => {
                let count = r.count()?;
                let mut clients = Vec::with_capacity(count);
                for _ in 0..count {
                    clients.push((r.client()?, r.u32()?, system_time(r.varint()?)));
                }
                Change::Active { clients }
            }
            _ => return Err(Undecodable("unknown change")),
        });
    }
    Ok((written_ms, changes))
}

/// Decodes a snapshot message record: its index and the message.
pub fn read_snapshot_message(
    r: &mut Reader<'_>,
    clock: Clock,
) -> Result<(u64, SharedMessage), Undecodable> {
    Ok((r.varint()?, r.message(clock)?))
}

/// Decodes a snapshot client record.
pub fn read_snapshot_client(r: &mut Reader<'_>) -> Result<SnapshotClient, Undecodable> {
    let id = r.client()?;
    let epoch = r.u32()?;
    let first_seq = r.varint()?;
    let lost_through = r.varint()?;
    let last_active_ms = r.varint()?;
    let n = r.count()?;
    let channels = (0..n).map(|_| r.channel()).collect::<Result<_, _>>()?;
    let n = r.count()?;
    let revoked = (0..n)
        .map(|_| Ok((r.channel()?, r.varint()?)))
        .collect::<Result<_, _>>()?;
    let n = r.count()?;
    let messages = (0..n).map(|_| r.varint()).collect::<Result<_, _>>()?;
    Ok(SnapshotClient {
        id,
        epoch,
        first_seq,
        lost_through,
        last_active_ms,
        channels,
        revoked,
        messages,
    })
}

#[cfg(test)]
mod tests;
