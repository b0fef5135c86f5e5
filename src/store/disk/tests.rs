//! The store's start-up record of the boot: a machine crash under a relaxed
//! fsync policy renews every mailbox, and keeps renewing them until that is
//! durable.

use super::*;
use crate::protocol::ClientId;
use crate::store::StoreKind;

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        kind: StoreKind::Disk,
        path: dir.to_owned(),
        fsync: FsyncPolicy::Never,
        ..StoreConfig::default()
    }
}

fn open(dir: &std::path::Path) -> Result<(DiskJournal, Vec<RecoveredClient>, Report), OpenError> {
    DiskJournal::open(&config(dir), Retention { max_messages: 10 }, 4)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cometbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// As if the machine rebooted since a start with a relaxed policy.
fn pretend_reboot(dir: &std::path::Path) {
    std::fs::write(dir.join("BOOT"), "another-boot relaxed").unwrap();
}

/// A store at `dir` holding one mailbox, `client`'s, at epoch 7.
async fn create_at_epoch_7(dir: &std::path::Path, client: &str) {
    let (journal, _, _) = open(dir).unwrap();
    let created = Change::Created {
        client: ClientId::parse(client).unwrap(),
        epoch: 7,
    };
    journal
        .submit(vec![created], None)
        .unwrap()
        .wait()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reboot_after_a_relaxed_start_renews_every_epoch() {
    let dir = scratch("boot-renew");
    create_at_epoch_7(&dir, "ann").await;
    pretend_reboot(&dir);
    let (journal, clients, report) = open(&dir).unwrap();
    assert!(report.epochs_renewed, "{report:?}");
    assert_eq!(clients.len(), 1);
    assert_ne!(clients[0].epoch, 7, "old cursors must answer reset");
    drop(journal);
    // The renewal is durable: the next start trusts what it finds.
    let (_, clients_after, report) = open(&dir).unwrap();
    assert!(!report.epochs_renewed, "{report:?}");
    assert_eq!(clients_after[0].epoch, clients[0].epoch);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_start_that_fails_before_the_renewal_is_durable_renews_again() {
    let dir = scratch("boot-order");
    create_at_epoch_7(&dir, "bea").await;
    pretend_reboot(&dir);
    // The renewal's snapshot cannot be written (its temporary file's name
    // is taken by a directory): the start fails after recovery.
    let last = StoreFiles::lock(&dir).map(|(f, _)| f.segments().unwrap().last().unwrap().number);
    let blocker = dir.join(format!("snapshot-{:08}.tmp", last.unwrap() + 1));
    std::fs::create_dir(&blocker).unwrap();
    assert!(open(&dir).is_err(), "the snapshot could not be written");
    std::fs::remove_dir(&blocker).unwrap();
    // The next start must still know that writes may have been lost.
    let (_, clients, report) = open(&dir).unwrap();
    assert!(
        report.epochs_renewed,
        "trusted data a reboot may have cut: {report:?}"
    );
    assert_ne!(clients[0].epoch, 7);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fsync = "always"` promises that an acknowledged change survives a power
/// cut. A SIGKILL keeps the page cache, so only a cut that drops what was
/// not synced (`writer::power`) tells a store that syncs from one that
/// does not: each acknowledged commit must come back after it.
#[tokio::test]
async fn with_fsync_always_an_acknowledged_change_survives_a_power_cut() {
    let dir = scratch("power-cut");
    let config = StoreConfig {
        fsync: FsyncPolicy::Always,
        ..config(&dir)
    };
    let open = || DiskJournal::open(&config, Retention { max_messages: 10 }, 4);
    let (journal, _, _) = open().unwrap();
    for n in 0..40 {
        let created = Change::Created {
            client: ClientId::parse(&format!("c{n}")).unwrap(),
            epoch: 1,
        };
        journal
            .submit(vec![created], None)
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let kept = writer::power::cut(&dir);
    drop(journal);
    for (segment, synced) in &kept {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(segment)
            .unwrap();
        file.set_len(*synced).unwrap();
    }
    assert!(
        kept.iter().any(|(_, len)| *len > 0),
        "something was synced: {kept:?}"
    );
    let (_, clients, report) = open().unwrap();
    assert_eq!(
        clients.len(),
        40,
        "every acknowledged mailbox is back: {report:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
