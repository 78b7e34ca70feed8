use super::*;
use mesh_proto::discovery::Status;

const T: &str = "type.googleapis.com/istio.workload.Address";

fn res(version: &str) -> VersionedResource {
    VersionedResource {
        version: version.to_owned(),
        resource: Any { type_url: T.to_owned(), value: version.as_bytes().to_vec() },
        aliases: vec![],
    }
}

fn view(entries: &[(&str, &str)]) -> ResourceView {
    entries.iter().map(|(n, v)| ((*n).to_owned(), res(v))).collect()
}

fn subscribe(names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: T.to_owned(),
        resource_names_subscribe: names.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

fn ack(nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: T.to_owned(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    }
}

fn nack(nonce: &str, message: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        error_detail: Some(Status { code: 3, message: message.to_owned(), details: vec![] }),
        ..ack(nonce)
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn wildcard_gets_everything_then_only_changes() {
    let mut s = Session::new();
    assert_eq!(s.on_request(subscribe(&["*"])), Ok(RequestOutcome::SubscriptionChanged));
    let r = s.respond(T, &view(&[("a", "1"), ("b", "1")]), None).unwrap();
    assert_eq!(names(&r), vec!["a", "b"]);
    assert!(r.removed_resources.is_empty());
    assert_eq!(s.on_request(ack(&r.nonce)), Ok(RequestOutcome::Ack));

    // Nothing changed: nothing to send.
    assert_eq!(s.respond(T, &view(&[("a", "1"), ("b", "1")]), None), None);
    // b changes, a is removed, c appears.
    let r = s.respond(T, &view(&[("b", "2"), ("c", "1")]), None).unwrap();
    assert_eq!(names(&r), vec!["b", "c"]);
    assert_eq!(r.removed_resources, vec!["a"]);
    assert_eq!(s.status(T).unwrap().pending_nonce.as_deref(), Some(r.nonce.as_str()));
}

#[test]
fn incremental_push_considers_only_changed_names() {
    let mut s = Session::new();
    s.on_request(subscribe(&["*"])).unwrap();
    s.respond(T, &view(&[("a", "1"), ("b", "1")]), None).unwrap();
    let changed: BTreeSet<String> = ["b".to_owned()].into();
    // a changed too, but only b is named: only b goes out.
    let r = s.respond(T, &view(&[("a", "9"), ("b", "2")]), Some(&changed)).unwrap();
    assert_eq!(names(&r), vec!["b"]);
    let gone: BTreeSet<String> = ["a".to_owned()].into();
    let r = s.respond(T, &view(&[("b", "2")]), Some(&gone)).unwrap();
    assert_eq!(r.removed_resources, vec!["a"]);
}

#[test]
fn resume_skips_what_the_proxy_already_holds() {
    let mut s = Session::new();
    let mut first = subscribe(&["*"]);
    first.initial_resource_versions =
        [("a".to_owned(), "1".to_owned()), ("gone".to_owned(), "1".to_owned())].into();
    s.on_request(first).unwrap();
    let r = s.respond(T, &view(&[("a", "1"), ("b", "1")]), None).unwrap();
    assert_eq!(names(&r), vec!["b"], "a is unchanged and not resent");
    assert_eq!(r.removed_resources, vec!["gone"], "what vanished meanwhile is removed");
}

#[test]
fn on_demand_names_and_aliases() {
    let mut s = Session::new();
    // ztunnel's on-demand start: subscribe and unsubscribe the wildcard.
    let mut first = subscribe(&["*"]);
    first.resource_names_unsubscribe = vec!["*".to_owned()];
    s.on_request(first).unwrap();
    let mut world = view(&[("uid-a", "1"), ("uid-b", "1")]);
    world.get_mut("uid-a").unwrap().aliases = vec!["net/10.0.0.1".to_owned()];
    let r = s.respond(T, &world, None).expect("the first request is always answered");
    assert!(r.resources.is_empty() && r.removed_resources.is_empty(), "nothing subscribed yet");
    assert_eq!(s.respond(T, &world, None), None);

    s.on_request(subscribe(&["net/10.0.0.1"])).unwrap();
    let r = s.respond(T, &world, None).unwrap();
    assert_eq!(names(&r), vec!["uid-a"], "found through its alias");

    s.on_request(subscribe(&["net/10.9.9.9"])).unwrap();
    let r = s.respond(T, &world, None).unwrap();
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, vec!["net/10.9.9.9"], "a definite 'does not exist'");
}

#[test]
fn nack_is_recorded_and_does_not_break_the_session() {
    let mut s = Session::new();
    s.on_request(subscribe(&["*"])).unwrap();
    let r = s.respond(T, &view(&[("a", "1")]), None).unwrap();
    let outcome = s.on_request(nack(&r.nonce, "a: bad address")).unwrap();
    assert_eq!(outcome, RequestOutcome::Nack { message: "a: bad address".to_owned() });
    let status = s.status(T).unwrap();
    assert_eq!(status.last_nack, Some((r.nonce.clone(), "a: bad address".to_owned())));
    assert_eq!(status.pending_nonce, None);
    // Later changes still flow.
    let r2 = s.respond(T, &view(&[("a", "2")]), None).unwrap();
    assert_eq!(s.on_request(ack(&r2.nonce)), Ok(RequestOutcome::Ack));
}

#[test]
fn an_empty_type_is_still_answered_once() {
    let mut s = Session::new();
    s.on_request(subscribe(&["*"])).unwrap();
    let r = s.respond(T, &ResourceView::new(), None).expect("the proxy learns it is in sync");
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    assert_eq!(s.respond(T, &ResourceView::new(), None), None, "and only once");
}

#[test]
fn stale_and_unknown_nonces() {
    let mut s = Session::new();
    s.on_request(subscribe(&["*"])).unwrap();
    let r1 = s.respond(T, &view(&[("a", "1")]), None).unwrap();
    let r2 = s.respond(T, &view(&[("a", "2")]), None).unwrap();
    assert_eq!(s.on_request(ack(&r1.nonce)), Ok(RequestOutcome::Stale));
    assert_eq!(s.on_request(ack(&r2.nonce)), Ok(RequestOutcome::Ack));
    assert!(matches!(s.on_request(ack("nope")), Err(SessionError::UnknownNonce { .. })));
    let mut no_type = ack("x");
    no_type.type_url.clear();
    assert_eq!(s.on_request(no_type), Err(SessionError::NoTypeUrl));
}

#[test]
fn legacy_empty_first_request_is_wildcard_and_unsubscribe_forgets() {
    let mut s = Session::new();
    s.on_request(subscribe(&[])).unwrap();
    assert!(s.status(T).unwrap().wildcard);

    let mut named = Session::new();
    named.on_request(subscribe(&["a"])).unwrap();
    named.respond(T, &view(&[("a", "1"), ("b", "1")]), None).unwrap();
    let mut unsub = subscribe(&[]);
    unsub.resource_names_unsubscribe = vec!["a".to_owned()];
    named.on_request(unsub).unwrap();
    let r =
        named.respond(T, &view(&[("a", "1")]), None).expect("a subscription change is answered");
    assert!(r.removed_resources.is_empty(), "no removal for what the proxy dropped itself");
    assert!(r.resources.is_empty());
}

#[test]
fn unacked_nonces_are_bounded() {
    let mut s = Session::new();
    s.on_request(subscribe(&["*"])).unwrap();
    let first = s.respond(T, &view(&[("a", "0")]), None).unwrap();
    for i in 1..=MAX_OUTSTANDING_NONCES {
        s.respond(T, &view(&[("a", &i.to_string())]), None).unwrap();
    }
    assert!(matches!(s.on_request(ack(&first.nonce)), Err(SessionError::UnknownNonce { .. })));
}
