//! The one conformance suite every [`BlobStore`] backend passes (after `object_store`'s
//! `integration.rs`): memory and local filesystem in the daemon's unit tests, a real Garage
//! server in `ferry-testkit`'s `storage` tests, and wrappers such as [`super::FaultyStore`].
//!
//! Each case works under its own `conformance/<case>/` prefix and panics with a message naming
//! what broke. The store should start empty under `conformance/`.

use super::{BlobError, BlobStore, PART_SIZE};
use crate::data::pool::BufferPool;
use bytes::Bytes;
use futures::future::join_all;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs every case in turn.
pub async fn run_all(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    put_get_round_trip(store).await;
    overwrite_replaces_atomically(store).await;
    get_range_bounds(store).await;
    pooled_ranges_match(store).await;
    list_is_recursive_and_sorted(store).await;
    list_dirs_is_one_level(store).await;
    delete_is_idempotent(store).await;
    missing_is_not_found(store).await;
    put_file_multipart_round_trip(store).await;
    put_file_small_and_missing(store).await;
    move_file_round_trip(store).await;
    move_file_sources(store).await;
    concurrent_multipart_moves(store).await;
    unusual_names_round_trip(store).await;
    invalid_keys_are_refused(store).await;
    concurrent_puts(store).await;
    sync_and_put_durable(store).await;
}

fn ok<T>(result: Result<T, BlobError>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize, seed: u8) -> Bytes {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}

pub async fn put_get_round_trip(store: &dyn BlobStore) {
    let key = "conformance/round-trip/object.bin";
    let data = pattern(100_000, 1);
    ok(store.put(key, data.clone()).await, "put");
    assert_eq!(ok(store.get(key).await, "get"), data, "get returns what put stored");
    assert_eq!(ok(store.size(key).await, "size"), 100_000);

    let empty = "conformance/round-trip/empty";
    ok(store.put(empty, Bytes::new()).await, "put empty");
    assert!(ok(store.get(empty).await, "get empty").is_empty());
    assert_eq!(ok(store.size(empty).await, "size empty"), 0);
}

pub async fn overwrite_replaces_atomically(store: &dyn BlobStore) {
    let key = "conformance/overwrite/object";
    let old = Bytes::from(vec![b'o'; 1 << 20]);
    let new = Bytes::from(vec![b'n'; 1 << 20]);
    ok(store.put(key, old.clone()).await, "first put");
    let done = AtomicBool::new(false);
    let writer = async {
        ok(store.put(key, new.clone()).await, "overwrite");
        done.store(true, Ordering::SeqCst);
    };
    let reader = async {
        for _ in 0..1000 {
            if done.load(Ordering::SeqCst) {
                break;
            }
            let got = ok(store.get(key).await, "get during overwrite");
            assert!(got == old || got == new, "a reader saw a mix or a part ({} bytes)", got.len());
            tokio::task::yield_now().await;
        }
    };
    futures::join!(writer, reader);
    assert_eq!(ok(store.get(key).await, "get after overwrite"), new);

    ok(store.put(key, Bytes::from_static(b"short")).await, "shorter overwrite");
    assert_eq!(ok(store.get(key).await, "get after shrink"), "short");
    assert_eq!(ok(store.size(key).await, "size after shrink"), 5, "no stale tail");
}

pub async fn get_range_bounds(store: &dyn BlobStore) {
    let key = "conformance/range/object";
    let data = pattern(1000, 2);
    ok(store.put(key, data.clone()).await, "put");
    for range in [0..10, 100..200, 990..1000, 0..1000] {
        let got = ok(store.get_range(key, range.clone()).await, "get_range");
        assert_eq!(got, data.slice(range.start as usize..range.end as usize), "range {range:?}");
    }
    for empty in [5..5, 1000..1000] {
        assert!(ok(store.get_range(key, empty.clone()).await, "empty range").is_empty(), "{empty:?}");
    }
    for past in [995..1005, 1000..1001, 2000..2010, 1001..1001] {
        match store.get_range(key, past.clone()).await {
            Err(BlobError::Backend { .. }) => {}
            other => panic!("range {past:?} past the end of 1000 bytes gave {other:?}"),
        }
    }
}

/// `get_range_pooled` gives what `get_range` gives: the same bytes, the same refusals, whether
/// or not the backend reads into the pool's buffers, and buffers are not shared between answers.
pub async fn pooled_ranges_match(store: &dyn BlobStore) {
    let key = "conformance/pooled/object";
    let data = pattern(300_000, 9);
    ok(store.put(key, data.clone()).await, "put");
    let pool = BufferPool::new(1 << 20);
    let mut held = Vec::new();
    for range in [0..10, 100..200_100, 299_990..300_000, 0..300_000, 5..5, 300_000..300_000] {
        let got = ok(store.get_range_pooled(key, range.clone(), &pool).await, "get_range_pooled");
        assert_eq!(got, data.slice(range.start as usize..range.end as usize), "pooled range {range:?}");
        held.push((range, got));
    }
    for (range, got) in &held {
        assert_eq!(got, &data.slice(range.start as usize..range.end as usize), "{range:?} overwritten later");
    }
    drop(held);
    for _ in 0..3 {
        let got = ok(store.get_range_pooled(key, 1000..2000, &pool).await, "pooled range, buffer reused");
        assert_eq!(got, data.slice(1000..2000));
    }
    for past in [299_995..300_005, 300_000..300_001, 400_000..400_010, 300_001..300_001] {
        match store.get_range_pooled(key, past.clone(), &pool).await {
            Err(BlobError::Backend { .. }) => {}
            other => panic!("pooled range {past:?} past the end of 300000 bytes gave {other:?}"),
        }
    }
    for missing in [0..10, 0..0] {
        match store.get_range_pooled("conformance/pooled/missing", missing.clone(), &pool).await {
            Err(BlobError::NotFound { key }) => assert_eq!(key, "conformance/pooled/missing"),
            other => panic!("pooled range {missing:?} of a missing key gave {other:?}"),
        }
    }
    match store.get_range_pooled("conformance/pooled", 0..10, &pool).await {
        Err(BlobError::NotFound { .. } | BlobError::Backend { .. }) => {}
        other => panic!("a pooled range of a directory-like prefix gave {other:?}"),
    }
    match store.get_range_pooled("conformance/../x", 0..10, &pool).await {
        Err(BlobError::InvalidKey { .. }) => {}
        other => panic!("a pooled range of an invalid key gave {other:?}"),
    }
}

pub async fn list_is_recursive_and_sorted(store: &dyn BlobStore) {
    let keys =
        ["conformance/list/b", "conformance/list/a/2", "conformance/list/a/1", "conformance/list/c/d/e"];
    for key in keys {
        ok(store.put(key, Bytes::from(key)).await, "put");
    }
    ok(store.put("conformance/listing/not-under-list", Bytes::new()).await, "put sibling");
    let mut expected: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    expected.sort();
    assert_eq!(ok(store.list("conformance/list").await, "list"), expected);
    assert_eq!(
        ok(store.list("conformance/list/a").await, "list sub-prefix"),
        ["conformance/list/a/1", "conformance/list/a/2"]
    );
    assert!(ok(store.list("conformance/list/missing").await, "list missing prefix").is_empty());
    assert!(
        ok(store.list("conformance/lis").await, "list partial segment").is_empty(),
        "prefixes are whole segments"
    );
    let all = ok(store.list("").await, "list root");
    assert!(expected.iter().all(|k| all.contains(k)), "root listing has every key");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "root listing is sorted");
}

pub async fn list_dirs_is_one_level(store: &dyn BlobStore) {
    for key in
        ["conformance/dirs/y/z/1", "conformance/dirs/x/1", "conformance/dirs/x/2", "conformance/dirs/top"]
    {
        ok(store.put(key, Bytes::from_static(b"d")).await, "put");
    }
    assert_eq!(
        ok(store.list_dirs("conformance/dirs").await, "list_dirs"),
        ["conformance/dirs/x", "conformance/dirs/y"]
    );
    assert_eq!(ok(store.list_dirs("conformance/dirs/y").await, "list_dirs nested"), ["conformance/dirs/y/z"]);
    assert!(ok(store.list_dirs("conformance/dirs/x").await, "list_dirs of files only").is_empty());
    assert!(ok(store.list_dirs("conformance/dirs/missing").await, "list_dirs missing").is_empty());
    assert!(ok(store.list_dirs("").await, "list_dirs root").contains(&"conformance".to_owned()));
}

pub async fn delete_is_idempotent(store: &dyn BlobStore) {
    let key = "conformance/delete/object";
    ok(store.put(key, Bytes::from_static(b"x")).await, "put");
    ok(store.put("conformance/delete/keep", Bytes::from_static(b"k")).await, "put neighbour");
    ok(store.delete(key).await, "delete");
    assert!(matches!(store.get(key).await, Err(BlobError::NotFound { .. })), "deleted object is gone");
    ok(store.delete(key).await, "delete again");
    ok(store.delete("conformance/delete/never-existed").await, "delete missing");
    ok(store.delete("conformance/no-such-dir/x").await, "delete in a missing directory");
    assert_eq!(ok(store.list("conformance/delete").await, "list"), ["conformance/delete/keep"]);
}

pub async fn missing_is_not_found(store: &dyn BlobStore) {
    let key = "conformance/missing/object";
    let not_found = |r: Result<(), BlobError>, what: &str| match r {
        Err(BlobError::NotFound { key: k }) => assert_eq!(k, key, "{what} names the key"),
        other => panic!("{what} of a missing key gave {other:?}"),
    };
    not_found(store.get(key).await.map(drop), "get");
    not_found(store.get_range(key, 0..10).await.map(drop), "get_range");
    not_found(store.get_range(key, 0..0).await.map(drop), "empty get_range");
    not_found(store.size(key).await.map(drop), "size");
}

pub async fn put_file_multipart_round_trip(store: &dyn BlobStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = "conformance/put-file/large.bin";
    let old = pattern(12 << 20, 3);
    let new = pattern(12 << 20, 4);
    assert!(new.len() > PART_SIZE, "the file is uploaded in parts");
    let local = dir.path().join("large.bin");
    tokio::fs::write(&local, &new).await.expect("write local file");
    ok(store.put(key, old.clone()).await, "put old");

    replace_while_reading(store, key, &old, &new, "put_file", store.put_file(key, &local)).await;
    assert_eq!(ok(store.size(key).await, "size"), new.len() as u64);
    let across = (PART_SIZE - 5) as u64..(PART_SIZE + 5) as u64;
    let got = ok(store.get_range(key, across.clone()).await, "range across a part boundary");
    assert_eq!(got, new.slice(PART_SIZE - 5..PART_SIZE + 5));
}

/// Runs `replace` (which puts `new` over `old` at `key`) while a reader checks that every get
/// gives one or the other whole, then checks the object is `new`.
async fn replace_while_reading(
    store: &dyn BlobStore,
    key: &str,
    old: &[u8],
    new: &[u8],
    what: &str,
    replace: impl Future<Output = Result<(), BlobError>>,
) {
    let done = AtomicBool::new(false);
    let writer = async {
        ok(replace.await, what);
        done.store(true, Ordering::SeqCst);
    };
    let (old_hash, new_hash) = (blake3::hash(old), blake3::hash(new));
    let reader = async {
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) {
                break;
            }
            let hash = blake3::hash(&ok(store.get(key).await, &format!("get during {what}")));
            assert!(hash == old_hash || hash == new_hash, "a reader saw a partial {what}");
            tokio::task::yield_now().await;
        }
    };
    futures::join!(writer, reader);
    assert_eq!(blake3::hash(&ok(store.get(key).await, "get")), new_hash, "BLAKE3 after {what}");
}

pub async fn put_file_small_and_missing(store: &dyn BlobStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, len) in [("small", 3), ("empty", 0), ("exactly-one-part", PART_SIZE)] {
        let local = dir.path().join(name);
        let data = pattern(len, 5);
        tokio::fs::write(&local, &data).await.expect("write local file");
        let key = format!("conformance/put-file/{name}");
        ok(store.put_file(&key, &local).await, "put_file");
        assert_eq!(ok(store.get(&key).await, "get"), data, "{name}");
    }
    let missing = dir.path().join("no-such-file");
    let key = "conformance/put-file/missing";
    missing_local_is_refused(store, key, &missing, "put_file", store.put_file(key, &missing)).await;
}

/// `op`, storing the missing local file `missing` at `key`, fails naming that file, and
/// nothing is stored.
async fn missing_local_is_refused(
    store: &dyn BlobStore,
    key: &str,
    missing: &std::path::Path,
    what: &str,
    op: impl Future<Output = Result<(), BlobError>>,
) {
    match op.await {
        Err(BlobError::Local { path, .. }) => assert_eq!(path, missing),
        other => panic!("{what} of a missing local file gave {other:?}"),
    }
    assert!(matches!(store.size(key).await, Err(BlobError::NotFound { .. })));
}

/// `move_file` replaces the object whole (a reader sees the old bytes or the new), leaves the
/// local file gone, creates the directories a key needs, and refuses a missing local file.
pub async fn move_file_round_trip(store: &dyn BlobStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = "conformance/move-file/large.bin";
    let old = pattern(12 << 20, 6);
    let new = pattern(12 << 20, 7);
    let local = dir.path().join("large.bin");
    tokio::fs::write(&local, &new).await.expect("write local file");
    ok(store.put(key, old.clone()).await, "put old");

    replace_while_reading(store, key, &old, &new, "move_file", store.move_file(key, &local)).await;
    assert!(!local.exists(), "the local file is gone after a move");
    assert_eq!(ok(store.list("conformance/move-file").await, "list"), [key], "no staging file is listed");

    let small = dir.path().join("small");
    tokio::fs::write(&small, b"abc").await.expect("write local file");
    ok(store.move_file("conformance/move-file/deep/er/small", &small).await, "move_file into new dirs");
    assert_eq!(ok(store.get("conformance/move-file/deep/er/small").await, "get"), &b"abc"[..]);
    assert!(!small.exists());

    let missing = dir.path().join("no-such-file");
    let key = "conformance/move-file/missing";
    missing_local_is_refused(store, key, &missing, "move_file", store.move_file(key, &missing)).await;
}

/// Several large files moved at once, as a node imports a pulled version (whole parts only,
/// a tail off any 4 KiB boundary, one byte past a part): each object holds its own file's
/// bytes and every local file is gone.
pub async fn concurrent_multipart_moves(store: &dyn BlobStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sizes = [2 * PART_SIZE, 2 * PART_SIZE + 4097, PART_SIZE + 1];
    let mut files = Vec::new();
    for (i, len) in sizes.into_iter().enumerate() {
        let local = dir.path().join(format!("part-{i}"));
        let bytes = pattern(len, 40 + i as u8);
        tokio::fs::write(&local, &bytes).await.expect("write local file");
        files.push((format!("conformance/concurrent-moves/part-{i}"), local, bytes));
    }
    let moves = files.iter().map(|(key, local, _)| store.move_file(key, local));
    for result in join_all(moves).await {
        ok(result, "concurrent move_file");
    }
    for (key, local, bytes) in &files {
        assert_eq!(ok(store.size(key).await, "size"), bytes.len() as u64, "{key}");
        assert!(ok(store.get(key).await, "get") == bytes, "{key} holds its own file's bytes");
        assert!(!local.exists(), "{} is gone after its move", local.display());
    }
    let keys: Vec<String> = files.iter().map(|(key, _, _)| key.clone()).collect();
    assert_eq!(ok(store.list("conformance/concurrent-moves").await, "list"), keys, "nothing else is listed");
}

/// A symlink or a file with a second hard link is stored by its bytes: the object never
/// becomes a link, and what the other name points at is left alone.
pub async fn move_file_sources(store: &dyn BlobStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("target");
    tokio::fs::write(&target, b"through a link").await.expect("write target");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let key = "conformance/move-file-sources/from-link";
    ok(store.move_file(key, &link).await, "move_file of a symlink");
    assert_eq!(ok(store.get(key).await, "get"), &b"through a link"[..]);
    assert!(std::fs::symlink_metadata(&link).is_err(), "the link itself is gone");

    let other_name = dir.path().join("other-name");
    std::fs::hard_link(&target, &other_name).expect("hard link");
    let key = "conformance/move-file-sources/from-hard-link";
    ok(store.move_file(key, &target).await, "move_file of a file with two names");
    std::fs::write(&other_name, b"changed later").expect("write through the other name");
    assert_eq!(ok(store.get(key).await, "get"), &b"through a link"[..], "the object is not shared");
    assert!(!target.exists());
}

pub async fn unusual_names_round_trip(store: &dyn BlobStore) {
    let keys = [
        "conformance/names/ünïcödé/файл 1.txt",
        "conformance/names/with space/a b",
        "conformance/names/emoji 🚀",
        "conformance/names/percent%20and+plus=equals",
        "conformance/names/hash#tag",
        "conformance/names/quote'and,comma;semi",
    ];
    for key in keys {
        ok(store.put(key, Bytes::from(key)).await, key);
        assert_eq!(ok(store.get(key).await, key), key.as_bytes());
        assert_eq!(ok(store.size(key).await, key), key.len() as u64);
    }
    let mut expected: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    expected.sort();
    assert_eq!(ok(store.list("conformance/names").await, "list"), expected, "listing gives the names back");
    assert_eq!(
        ok(store.list_dirs("conformance/names").await, "list_dirs"),
        ["conformance/names/with space", "conformance/names/ünïcödé"]
    );
}

pub async fn invalid_keys_are_refused(store: &dyn BlobStore) {
    let local = std::path::Path::new("/nonexistent");
    for key in
        ["", "/abs", "trailing/", "a//b", "../up", "a/../b", "a/./b", "ctrl\u{1}", "new\nline", "x/part#1"]
    {
        let results = [
            store.put(key, Bytes::new()).await.err(),
            store.put_file(key, local).await.err(),
            store.move_file(key, local).await.err(),
            store.get(key).await.err(),
            store.get_range(key, 0..1).await.err(),
            store.size(key).await.err(),
            store.delete(key).await.err(),
        ];
        for result in results {
            assert!(matches!(result, Some(BlobError::InvalidKey { .. })), "key {key:?} gave {result:?}");
        }
    }
    for key in ["", "a//b", "../up", "x/part#1"] {
        let durable = store.put_durable(key, Bytes::new()).await.err();
        assert!(
            matches!(durable, Some(BlobError::InvalidKey { .. })),
            "put_durable {key:?} gave {durable:?}"
        );
        let synced = store.sync(&["conformance/ok".to_owned(), key.to_owned()]).await.err();
        assert!(matches!(synced, Some(BlobError::InvalidKey { .. })), "sync {key:?} gave {synced:?}");
    }
    for prefix in ["/abs", "a//b", "..", "trailing/"] {
        assert!(matches!(store.list(prefix).await, Err(BlobError::InvalidKey { .. })), "list {prefix:?}");
        assert!(
            matches!(store.list_dirs(prefix).await, Err(BlobError::InvalidKey { .. })),
            "list_dirs {prefix:?}"
        );
    }
}

pub async fn concurrent_puts(store: &dyn BlobStore) {
    let keys: Vec<String> = (0..16).map(|i| format!("conformance/concurrent/k{i:02}")).collect();
    let puts = keys.iter().enumerate().map(|(i, key)| store.put(key, pattern(64 * 1024, i as u8)));
    for result in join_all(puts).await {
        ok(result, "concurrent put");
    }
    let gets = join_all(keys.iter().map(|key| store.get(key))).await;
    for (i, got) in gets.into_iter().enumerate() {
        assert_eq!(ok(got, "get"), pattern(64 * 1024, i as u8), "key {i}");
    }
    assert_eq!(ok(store.list("conformance/concurrent").await, "list"), keys);
}

/// `sync` of stored objects succeeds and changes nothing a reader sees; `put_durable` stores
/// like `put` (whole, replacing atomically, creating the directories a key needs) and leaves
/// no staging object behind.
pub async fn sync_and_put_durable(store: &dyn BlobStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("moved");
    tokio::fs::write(&local, pattern(70_000, 11)).await.expect("write local file");
    let keys: Vec<String> =
        ["conformance/durable/a/put", "conformance/durable/b/c/moved"].map(str::to_owned).to_vec();
    ok(store.put(&keys[0], pattern(50_000, 10)).await, "put");
    ok(store.move_file(&keys[1], &local).await, "move_file");
    ok(store.sync(&keys).await, "sync");
    ok(store.sync(&[]).await, "sync of nothing");
    assert_eq!(ok(store.get(&keys[0]).await, "get after sync"), pattern(50_000, 10));
    assert_eq!(ok(store.get(&keys[1]).await, "get after sync"), pattern(70_000, 11));

    let key = "conformance/durable/new/dirs/manifest";
    ok(store.put_durable(key, pattern(4000, 12)).await, "put_durable into new directories");
    assert_eq!(ok(store.get(key).await, "get"), pattern(4000, 12));
    let (old, new) = (pattern(1 << 20, 13), pattern(1 << 20, 14));
    ok(store.put_durable(key, old.clone()).await, "put_durable over an object");
    replace_while_reading(store, key, &old, &new, "put_durable", store.put_durable(key, new.clone())).await;
    ok(store.put_durable(key, Bytes::new()).await, "put_durable of nothing");
    assert_eq!(ok(store.size(key).await, "size"), 0, "no stale tail");
    assert_eq!(ok(store.list("conformance/durable/new").await, "list"), [key], "no staging object is listed");
}
