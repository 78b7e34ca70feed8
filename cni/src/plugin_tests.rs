#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

use super::*;

fn env(command: &str, args: &str) -> CniEnv {
    let vars: HashMap<&str, String> = [
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", "c1".to_owned()),
        ("CNI_NETNS", "/var/run/netns/x".to_owned()),
        ("CNI_IFNAME", "eth0".to_owned()),
        ("CNI_ARGS", args.to_owned()),
    ]
    .into_iter()
    .collect();
    CniEnv::from_lookup(|k| vars.get(k).cloned())
}

const POD_ARGS: &str =
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=infra";

fn conf(extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s","type":"mesh-cni","agent_socket":"/nonexistent/mesh.sock"{extra},
        "prevResult":{{"cniVersion":"1.0.0","ips":[{{"address":"10.244.0.5/24","gateway":"10.244.0.1"}}]}}}}"#
    )
}

fn error_of(out: &Outcome) -> Value {
    assert!(!out.success, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn cni_args_and_the_sandbox_come_from_the_environment() {
    let e = env("ADD", POD_ARGS);
    assert_eq!(e.args["K8S_POD_NAME"], "p");
    assert_eq!(e.netns.as_deref(), Some(Path::new("/var/run/netns/x")));
    let prev: Value =
        serde_json::from_str(r#"{"ips":[{"address":"10.244.0.5/24"},{"address":"fd00::5/64"}]}"#)
            .unwrap();
    let report = sandbox(&e, Some(&prev)).unwrap();
    assert_eq!((report.namespace.as_str(), report.name.as_str()), ("ns", "p"));
    assert_eq!(report.container_id, "infra");
    assert_eq!(
        report.ips,
        vec!["10.244.0.5".parse::<std::net::IpAddr>().unwrap(), "fd00::5".parse().unwrap()]
    );
    assert!(sandbox(&env("ADD", "IgnoreUnknown=1"), None).is_none());
}

#[test]
fn version_lists_the_supported_versions() {
    let out = run(&env("VERSION", ""), r#"{"cniVersion":"1.0.0"}"#);
    assert!(out.success);
    let body: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(body["cniVersion"], "1.0.0");
    assert_eq!(body["supportedVersions"].as_array().unwrap().len(), SUPPORTED_VERSIONS.len());
}

#[test]
fn add_fails_closed_when_the_agent_is_unreachable() {
    let body = error_of(&run(&env("ADD", POD_ARGS), &conf("")));
    assert_eq!(body["code"], code::TRY_AGAIN_LATER);
    assert_eq!(body["cniVersion"], "1.0.0");
    assert!(body["msg"].as_str().unwrap().contains("ns/p"), "{body}");
    assert!(body["details"].as_str().unwrap().contains("/nonexistent/mesh.sock"), "{body}");
}

#[test]
fn excluded_namespaces_and_non_pods_pass_prev_result_through() {
    let prev: Value = serde_json::from_str(&conf("")).unwrap();
    for (args, extra) in [(POD_ARGS, r#","exclude_namespaces":["ns"]"#), ("IgnoreUnknown=1", "")] {
        let out = run(&env("ADD", args), &conf(extra));
        assert!(out.success, "{out:?}");
        let printed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(printed, prev["prevResult"]);
    }
}

#[test]
fn bad_input_gets_the_matching_error_code() {
    let cases = [
        ("ADD", "not json".to_owned(), code::DECODE_FAILURE),
        ("ADD", r#"{"cniVersion":"9.9.9"}"#.to_owned(), code::INCOMPATIBLE_VERSION),
        ("ADD", r#"{"cniVersion":"1.0.0"}"#.to_owned(), code::INVALID_CONFIG),
        ("CHECK", r#"{"cniVersion":"1.0.0"}"#.to_owned(), code::INVALID_CONFIG),
        ("FROB", conf(""), code::INVALID_ENV),
    ];
    for (command, stdin, want) in cases {
        let body = error_of(&run(&env(command, POD_ARGS), &stdin));
        assert_eq!(body["code"], want, "{command} {stdin}: {body}");
    }
}

#[test]
fn del_and_check_succeed_without_the_agent() {
    for command in ["DEL", "CHECK"] {
        let out = run(&env(command, POD_ARGS), &conf(""));
        assert_eq!(out, Outcome::ok(String::new()), "{command}");
    }
}
