use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::{mpsc, watch};

use super::error::{Problem, StartError};
use super::watch::{FileErrors, Watcher};
use super::{LocalSource, run};
use crate::source::{Kind, Object, ObjectRef, SourceEvent};
use crate::translate::ObjectKey;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn namespace(name: &str, label: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{tier: {label}}}\n"
    )
}

/// Several Namespace documents in one file.
fn namespaces(list: &[(&str, &str)]) -> String {
    let docs: Vec<String> = list.iter().map(|(name, label)| namespace(name, label)).collect();
    docs.join("---\n")
}

fn ns_ref(name: &str) -> ObjectRef {
    ObjectRef { kind: Kind::Namespace, key: ObjectKey::new("", name) }
}

fn applied_refs(events: &[SourceEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            SourceEvent::Applied(o) => o.reference().to_string(),
            other => panic!("expected Applied, got {other:?}"),
        })
        .collect()
}

fn label(event: &SourceEvent) -> String {
    match event {
        SourceEvent::Applied(Object::Namespace(ns)) => {
            ns.metadata.labels.as_ref().unwrap()["tier"].clone()
        }
        other => panic!("{other:?}"),
    }
}

struct Fixture {
    dir: TempDir,
    watcher: Watcher,
    errors: watch::Receiver<FileErrors>,
}

fn fixture() -> Fixture {
    let dir = TempDir::new().unwrap();
    let (tx, errors) = watch::channel(FileErrors::new());
    let watcher = Watcher::new(dir.path().to_owned(), tx);
    Fixture { dir, watcher, errors }
}

#[tokio::test]
async fn scan_is_recursive_and_ignores_hidden_temp_and_other_files() {
    let mut f = fixture();
    let d = f.dir.path();
    write(d, "a.yaml", &namespace("a", "x"));
    write(d, "sub/deeper/b.yml", &namespace("b", "x"));
    write(d, "c.json", r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}"#);
    write(d, ".hidden.yaml", &namespace("h1", "x"));
    write(d, ".a.yaml.swp", "garbage: [");
    write(d, "a.yaml~", "garbage: [");
    write(d, "#a.yaml#", "garbage: [");
    write(d, "README.md", "not yaml: [");
    write(d, ".git/x.yaml", &namespace("h2", "x"));
    let events = f.watcher.step().await;
    assert_eq!(applied_refs(&events), ["Namespace a", "Namespace b", "Namespace c"]);
    assert!(f.errors.borrow().is_empty());
    assert!(f.watcher.step().await.is_empty(), "nothing changed");
}

#[tokio::test]
async fn a_valid_edit_produces_exactly_one_applied() {
    let mut f = fixture();
    let file = write(f.dir.path(), "ns.yaml", &namespaces(&[("a", "x1"), ("b", "x1")]));
    assert_eq!(f.watcher.step().await.len(), 2);
    // Same length, same second: only the contents differ.
    std::fs::write(&file, namespaces(&[("a", "x1"), ("b", "x2")])).unwrap();
    let events = f.watcher.step().await;
    assert_eq!(applied_refs(&events), ["Namespace b"]);
    assert_eq!(label(&events[0]), "x2");
    // Rewriting identical contents is not a change.
    std::fs::write(&file, namespaces(&[("a", "x1"), ("b", "x2")])).unwrap();
    assert!(f.watcher.step().await.is_empty());
}

#[tokio::test]
async fn removing_a_document_produces_exactly_one_deleted() {
    let mut f = fixture();
    let file = write(f.dir.path(), "ns.yaml", &namespaces(&[("a", "x"), ("b", "x")]));
    f.watcher.step().await;
    std::fs::write(&file, namespace("a", "x")).unwrap();
    assert_eq!(f.watcher.step().await, [SourceEvent::Deleted(ns_ref("b"))]);
}

#[tokio::test]
async fn removing_a_file_deletes_its_objects() {
    let mut f = fixture();
    write(f.dir.path(), "keep.yaml", &namespace("k", "x"));
    let file = write(f.dir.path(), "sub/gone.yaml", &namespaces(&[("a", "x"), ("b", "x")]));
    f.watcher.step().await;
    std::fs::remove_file(file).unwrap();
    assert_eq!(
        f.watcher.step().await,
        [SourceEvent::Deleted(ns_ref("a")), SourceEvent::Deleted(ns_ref("b"))]
    );
}

#[tokio::test]
async fn a_broken_edit_keeps_the_previous_objects_until_fixed() {
    let mut f = fixture();
    let file = write(f.dir.path(), "ns.yaml", &namespaces(&[("a", "x1"), ("b", "x1")]));
    f.watcher.step().await;
    // Syntax error in the second document, and the first one edited.
    std::fs::write(
        &file,
        format!("{}---\napiVersion: v1\nkind: [Namespace\n", namespace("a", "x2")),
    )
    .unwrap();
    assert!(f.watcher.step().await.is_empty(), "a file with errors changes nothing");
    {
        let errors = f.errors.borrow_and_update();
        let list = &errors[&file];
        assert_eq!(list.len(), 1);
        assert!(matches!(list[0].problem, Problem::Syntax { .. }), "{}", list[0]);
        assert_eq!(list[0].place.as_ref().unwrap().document, 2);
        assert!(list[0].to_string().contains("ns.yaml document 2"), "{}", list[0]);
    }
    // Polling again changes nothing and republishes nothing.
    assert!(f.watcher.step().await.is_empty());
    assert!(!f.errors.has_changed().unwrap());
    // Fixed: the edit of `a` applies and `b` (now gone) is deleted.
    std::fs::write(&file, namespace("a", "x2")).unwrap();
    let events = f.watcher.step().await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], SourceEvent::Deleted(ns_ref("b")));
    assert_eq!(label(&events[1]), "x2");
    assert!(f.errors.borrow().is_empty());
}

#[tokio::test]
async fn an_invalid_new_file_applies_nothing_and_is_reported() {
    let mut f = fixture();
    write(f.dir.path(), "ok.yaml", &namespace("a", "x"));
    let bad = write(
        f.dir.path(),
        "bad.yaml",
        &format!(
            "{}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p}}\nspec: {{mtls: {{mode: BOGUS}}}}\n",
            namespace("b", "x")
        ),
    );
    assert_eq!(applied_refs(&f.watcher.step().await), ["Namespace a"]);
    let errors = f.errors.borrow();
    let message = errors[&bad][0].to_string();
    assert!(message.contains("bad.yaml document 2"), "{message}");
    assert!(message.contains("PeerAuthentication default/p"), "{message}");
    assert!(message.contains("spec.mtls.mode"), "{message}");
}

#[tokio::test]
async fn duplicates_across_files_are_reported_and_resolved() {
    let mut f = fixture();
    let first = write(f.dir.path(), "a.yaml", &namespace("dup", "from-a"));
    assert_eq!(f.watcher.step().await.len(), 1);
    let second = write(f.dir.path(), "b.yaml", &namespaces(&[("other", "x"), ("dup", "from-b")]));
    assert!(f.watcher.step().await.is_empty(), "the incumbent stays, the newcomer is refused");
    {
        let errors = f.errors.borrow_and_update();
        assert_eq!(errors.keys().collect::<Vec<_>>(), [&second], "the incumbent is fine");
        let e = &errors[&second][0];
        match &e.problem {
            Problem::Duplicate { other } => assert_eq!(other.file, first),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("b.yaml document 2"), "{e}");
        assert!(e.to_string().contains("a.yaml document 1"), "{e}");
        assert!(e.to_string().contains("Namespace dup"), "{e}");
    }
    // Once a.yaml drops it, b.yaml is accepted whole.
    std::fs::write(&first, namespace("only-a", "x")).unwrap();
    let events = f.watcher.step().await;
    let mut refs: Vec<String> = events
        .iter()
        .map(|e| match e {
            SourceEvent::Applied(o) => format!("applied {}", o.reference()),
            SourceEvent::Deleted(r) => format!("deleted {r}"),
            SourceEvent::Synced => "synced".to_owned(),
        })
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        ["applied Namespace dup", "applied Namespace only-a", "applied Namespace other"]
    );
    assert!(f.errors.borrow().is_empty());
}

#[tokio::test]
async fn a_vanished_directory_is_empty() {
    let mut f = fixture();
    let dir = f.dir.path().join("conf");
    write(&dir, "a.yaml", &namespace("a", "x"));
    let (tx, errors) = watch::channel(FileErrors::new());
    f.watcher = Watcher::new(dir.clone(), tx);
    assert_eq!(f.watcher.step().await.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(f.watcher.step().await, [SourceEvent::Deleted(ns_ref("a"))]);
    assert!(errors.borrow()[&dir][0].to_string().contains("gone"));
    // Back again: its objects return and the error goes.
    write(&dir, "a.yaml", &namespace("a", "x"));
    assert_eq!(applied_refs(&f.watcher.step().await), ["Namespace a"]);
    assert!(errors.borrow().is_empty());
}

#[tokio::test]
async fn a_missing_directory_is_an_error_at_start() {
    let dir = TempDir::new().unwrap();
    let (tx, _rx) = mpsc::channel(8);
    let missing = dir.path().join("nope");
    let err =
        LocalSource::spawn(missing.clone(), tx.clone(), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(&err, StartError::Missing(p) if *p == missing), "{err}");
    let file = write(dir.path(), "f.yaml", "");
    let err = run(file, tx, Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, StartError::NotADirectory(_)), "{err}");
}

async fn next(rx: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn the_source_syncs_then_reports_changes() {
    let dir = TempDir::new().unwrap();
    let file = write(dir.path(), "ns.yaml", &namespace("a", "x1"));
    let (tx, mut rx) = mpsc::channel(8);
    let source =
        LocalSource::spawn(dir.path().to_owned(), tx, Duration::from_millis(20)).await.unwrap();
    let mut errors = source.errors();
    assert_eq!(applied_refs(&[next(&mut rx).await]), ["Namespace a"]);
    assert_eq!(next(&mut rx).await, SourceEvent::Synced);
    std::fs::write(&file, "kind: [\n").unwrap();
    tokio::time::timeout(Duration::from_secs(10), errors.changed()).await.unwrap().unwrap();
    assert_eq!(errors.borrow_and_update().len(), 1);
    std::fs::write(&file, namespace("a", "x2")).unwrap();
    assert_eq!(label(&next(&mut rx).await), "x2");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(next(&mut rx).await, SourceEvent::Deleted(ns_ref("a")));
    assert!(rx.try_recv().is_err(), "nothing else");
    drop(rx);
    tokio::time::timeout(Duration::from_secs(10), source.join()).await.unwrap();
}

#[tokio::test]
async fn example_manifests_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/local-config");
    let (tx, _errors) = watch::channel(FileErrors::new());
    let mut watcher = Watcher::new(dir, tx.clone());
    let events = watcher.step().await;
    assert!(tx.borrow().is_empty(), "{:#?}", *tx.borrow());
    let refs = applied_refs(&events);
    for expected in [
        "Namespace demo",
        "Pod demo/client",
        "Pod demo/server",
        "Service demo/server",
        "AuthorizationPolicy demo/server-allow-client",
    ] {
        assert!(refs.iter().any(|r| r == expected), "{expected} not in {refs:?}");
    }
}

#[tokio::test]
async fn duplicates_in_two_new_files_fail_both() {
    let mut f = fixture();
    let a = write(f.dir.path(), "a.yaml", &namespace("dup", "x"));
    let b = write(f.dir.path(), "b.yaml", &namespace("dup", "y"));
    write(f.dir.path(), "c.yaml", &namespace("fine", "x"));
    assert_eq!(applied_refs(&f.watcher.step().await), ["Namespace fine"]);
    let errors = f.errors.borrow();
    assert_eq!(errors.keys().collect::<Vec<_>>(), [&a, &b]);
    assert!(matches!(&errors[&a][0].problem, Problem::Duplicate { other } if other.file == b));
    assert!(matches!(&errors[&b][0].problem, Problem::Duplicate { other } if other.file == a));
}
