//! The watcher reports each content change exactly once, for every way files change.

use std::path::Path;
use std::time::Duration;

use strangler_routes::spawn_watcher;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

use strangler_routes::ChangeEvent;

// Long poll: these tests exercise the file system events; the poll has its own test.
const NO_POLL: Duration = Duration::from_secs(3600);
const EXPECT_WITHIN: Duration = Duration::from_secs(5);
// How long to wait to be confident that no (further) event is coming: well past the
// 200 ms debounce.
const QUIET: Duration = Duration::from_millis(800);

async fn expect_one(events: &mut Receiver<ChangeEvent>) {
    let event = timeout(EXPECT_WITHIN, events.recv()).await;
    assert!(
        matches!(event, Ok(Some(_))),
        "expected a change event, got {event:?}"
    );
    expect_none(events).await;
}

async fn expect_none(events: &mut Receiver<ChangeEvent>) {
    let event = timeout(QUIET, events.recv()).await;
    assert!(event.is_err(), "expected no event, got {event:?}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn in_place_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    write(&file, "a: 1\n");
    let mut events = spawn_watcher(file.clone(), NO_POLL).unwrap();
    write(&file, "a: 2\n");
    expect_one(&mut events).await;
}

#[tokio::test]
async fn unchanged_touch_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    write(&file, "a: 1\n");
    let mut events = spawn_watcher(file.clone(), Duration::from_millis(100)).unwrap();
    write(&file, "a: 1\n");
    write(&dir.path().join("unrelated.txt"), "x");
    expect_none(&mut events).await;
}

#[tokio::test]
async fn atomic_rename() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    write(&file, "a: 1\n");
    let mut events = spawn_watcher(file.clone(), NO_POLL).unwrap();
    let tmp = dir.path().join(".routes.yaml.swp");
    write(&tmp, "a: 2\n");
    std::fs::rename(&tmp, &file).unwrap();
    expect_one(&mut events).await;
    // The watch survives the rename: a second edit is seen too.
    write(&tmp, "a: 3\n");
    std::fs::rename(&tmp, &file).unwrap();
    expect_one(&mut events).await;
}

#[tokio::test]
async fn configmap_symlink_swap() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..2026_a")).unwrap();
    write(&root.join("..2026_a/routes.yaml"), "a: 1\n");
    symlink("..2026_a", root.join("..data")).unwrap();
    symlink("..data/routes.yaml", root.join("routes.yaml")).unwrap();
    let file = root.join("routes.yaml");
    let mut events = spawn_watcher(file.clone(), NO_POLL).unwrap();

    std::fs::create_dir(root.join("..2026_b")).unwrap();
    write(&root.join("..2026_b/routes.yaml"), "a: 2\n");
    symlink("..2026_b", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_a")).unwrap();
    expect_one(&mut events).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "a: 2\n");
}

#[tokio::test]
async fn poll_catches_changes_without_events() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    write(&file, "a: 1\n");
    let mut events = spawn_watcher(file.clone(), Duration::from_millis(50)).unwrap();
    write(&file, "a: 2\n");
    // Whichever of the event path and the poll sees it first, it is reported once.
    expect_one(&mut events).await;
}

#[tokio::test]
async fn watcher_follows_extra_files() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    let ca = other.path().join("ca.pem");
    write(&file, "a: 1\n");
    write(&ca, "pem 1\n");
    let (mut events, reloader) =
        strangler_routes::spawn_watcher_files(vec![file.clone()], NO_POLL).unwrap();
    reloader.set_files(vec![file.clone(), ca.clone()]);
    // Let the task pick up the new set before changing the file; the set change itself
    // must not emit anything.
    expect_none(&mut events).await;
    write(&ca, "pem 2\n");
    expect_one(&mut events).await;
}

#[test]
fn outside_a_runtime_is_an_error() {
    let err = spawn_watcher("routes.yaml".into(), NO_POLL).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"));
}
