use super::*;
use ferry_proto::policy::POLICY_FORMAT;
use ferry_proto::{DeptId, ErrorCode};

/// Accepts `good:<body>` and refuses anything else: the signature check is the verifier's job,
/// tested in `ferry-net`; here only what the replica does with its answer matters.
#[derive(Debug)]
struct PrefixVerifier;

impl SnapshotVerifier for PrefixVerifier {
    fn verify(&self, signed: &[u8], _now: SystemTime) -> Result<Vec<u8>, String> {
        signed.strip_prefix(b"good:").map(<[u8]>::to_vec).ok_or_else(|| "bad signature".to_string())
    }
}

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn signed(serial: u64, issued_secs: u64) -> Vec<u8> {
    let snapshot = PolicySnapshot {
        format: POLICY_FORMAT.into(),
        serial,
        issued_at_ms: ((T0 + issued_secs) * 1000) as i64,
        ministry: DeptId::new("mot").unwrap(),
        datasets: vec![],
        grants: vec![],
    };
    [b"good:".as_slice(), &snapshot.to_json()].concat()
}

fn open(dir: &Path, now: SystemTime) -> PolicyReplica {
    PolicyReplica::open(dir, Arc::new(PrefixVerifier), Duration::from_secs(60), now)
}

#[test]
fn a_node_without_a_snapshot_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path(), at(0));
    let denial = replica.current(at(0)).unwrap_err();
    assert_eq!((denial.code, denial.reason), (ErrorCode::Unavailable, "no_policy"));
    assert!(replica.status(at(0)).stale);
}

#[test]
fn snapshots_install_persist_and_never_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path(), at(0));
    assert_eq!(replica.offer(&signed(3, 0), at(0)).unwrap(), Acceptance::Newer);
    assert_eq!(replica.current(at(1)).unwrap().serial, 3);
    assert_eq!(std::fs::read(dir.path().join(POLICY_FILE)).unwrap(), signed(3, 0));

    let rollback = replica.offer(&signed(2, 5), at(5)).unwrap_err();
    assert_eq!(rollback.reason(), "rollback");
    let forged = replica.offer(b"forged:{}", at(5)).unwrap_err();
    assert_eq!(forged.reason(), "bad_signature");
    let garbage = replica.offer(b"good:{not json", at(5)).unwrap_err();
    assert_eq!(garbage.reason(), "malformed");
    // Nothing refused replaced the copy held or the persisted one.
    assert_eq!(replica.held().unwrap().serial, 3);
    assert_eq!(std::fs::read(dir.path().join(POLICY_FILE)).unwrap(), signed(3, 0));
    assert_eq!(replica.offer(&signed(4, 6), at(6)).unwrap(), Acceptance::Newer);
    assert_eq!(*replica.subscribe().borrow(), Some(bytes::Bytes::from(signed(4, 6))));
}

#[test]
fn the_copy_goes_stale_after_max_staleness_and_a_refresh_revives_it() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path(), at(0));
    replica.offer(&signed(1, 0), at(0)).unwrap();
    assert!(replica.current(at(60)).is_ok());
    let denial = replica.current(at(61)).unwrap_err();
    assert_eq!((denial.code, denial.reason), (ErrorCode::Unavailable, "policy_stale"));
    assert!(denial.message.contains("max-staleness"), "{}", denial.message);
    assert!(replica.status(at(61)).stale);
    assert_eq!(replica.offer(&signed(1, 70), at(70)).unwrap(), Acceptance::Refresh);
    assert!(replica.current(at(100)).is_ok());
}

#[test]
fn a_restarted_node_counts_freshness_from_the_issue_time() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), at(0)).offer(&signed(7, 0), at(0)).unwrap();
    let soon = open(dir.path(), at(30));
    assert_eq!(soon.current(at(30)).unwrap().serial, 7);
    let late = open(dir.path(), at(600));
    assert_eq!(late.current(at(600)).unwrap_err().reason, "policy_stale");
    // A newer snapshot is still required to move on: the persisted serial holds.
    assert_eq!(late.offer(&signed(6, 601), at(601)).unwrap_err().reason(), "rollback");
}

#[test]
fn a_corrupt_persisted_copy_is_ignored_and_the_node_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(POLICY_FILE), b"good:{\"format\":").unwrap();
    let replica = open(dir.path(), at(0));
    assert_eq!(replica.current(at(0)).unwrap_err().reason, "no_policy");
    assert_eq!(replica.offer(&signed(1, 0), at(0)).unwrap(), Acceptance::Newer);
}

/// A signer whose certificate expired at `expired`: judged at a later time it is refused.
#[derive(Debug)]
struct ExpiringVerifier {
    expired: SystemTime,
}

impl SnapshotVerifier for ExpiringVerifier {
    fn verify(&self, signed: &[u8], now: SystemTime) -> Result<Vec<u8>, String> {
        match now > self.expired {
            true => Err("the signer's certificate expired".into()),
            false => PrefixVerifier.verify(signed, now),
        }
    }

    fn verify_issued(&self, signed: &[u8], now: SystemTime) -> Result<Vec<u8>, String> {
        let body = PrefixVerifier.verify(signed, now)?;
        let issued = PolicySnapshot::parse(&body).map_err(|e| e.to_string())?.issued_at_ms;
        self.verify(signed, UNIX_EPOCH + Duration::from_millis(issued as u64))
    }
}

#[test]
fn a_persisted_snapshot_is_judged_at_its_issue_time_and_a_stale_one_still_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let reopen = |now| {
        PolicyReplica::open(
            dir.path(),
            Arc::new(ExpiringVerifier { expired: at(10) }),
            Duration::from_secs(60),
            now,
        )
    };
    reopen(at(0)).offer(&signed(3, 5), at(5)).unwrap();

    // Restarted after the signer expired, within max-staleness of the issue: still in force.
    assert_eq!(reopen(at(30)).current(at(30)).unwrap().serial, 3, "signature judged at its issue time");
    // Past max-staleness: loaded, and stale.
    let late = reopen(at(100));
    assert_eq!(late.held().map(|s| s.serial), Some(3));
    let denial = late.current(at(100)).unwrap_err();
    assert_eq!((denial.code, denial.reason), (ErrorCode::Unavailable, "policy_stale"));
    // A copy claiming an issue time after the signer expired does not verify.
    std::fs::write(dir.path().join(POLICY_FILE), signed(4, 20)).unwrap();
    let denial = reopen(at(30)).current(at(30)).unwrap_err();
    assert_eq!(denial.reason, "no_policy");
}
