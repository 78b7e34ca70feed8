use super::*;

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: demo
  labels: {app: web}
  annotations: {ambient.istio.io/dns-capture: 'false'}
spec:
  nodeName: node-b
  serviceAccountName: web
  restartPolicy: OnFailure
  containers:
  - name: app
    command: [python3, -m, http.server]
    args: ['8080']
    workingDir: /tmp
    env:
    - {name: GREETING, value: hi}
    - name: MY_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
";

#[test]
fn reads_pods_services_namespaces_recursively() {
    let dir = dir_with(&[
        ("a/pod.yaml", POD),
        (
            "ns.yml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {istio.io/dataplane-mode: ambient}\n",
        ),
        (
            "svc.json",
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"demo"},"spec":{"ports":[{"port":80}]}}"#,
        ),
        (".hidden.yaml", "not: [valid"),
        ("notes.txt", "ignored"),
    ]);
    let m = load(dir.path()).unwrap();
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.nodes(), vec!["node-b".to_owned()]);
    let pod = m.pod("demo", "web").unwrap();
    assert_eq!(pod.service_account, "web");
    assert_eq!(pod.restart, RestartPolicy::OnFailure);
    let c = &pod.containers[0];
    assert_eq!(c.argv, ["python3", "-m", "http.server", "8080"]);
    assert_eq!(c.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(c.env[0], ("GREETING".into(), EnvValue::Literal("hi".into())));
    assert_eq!(c.env[1], ("MY_IP".into(), EnvValue::Field("status.podIP".into())));
    assert!(m.ambient(pod));
    assert_eq!(
        m.services,
        vec![ServiceDef { namespace: "demo".into(), name: "web".into(), cluster_ip: None }]
    );
}

#[test]
fn dataplane_mode_of_the_pod_wins_over_its_namespace() {
    let opted_out =
        POD.replace("labels: {app: web}", "labels: {app: web, istio.io/dataplane-mode: none}");
    let dir = dir_with(&[
        ("pod.yaml", &opted_out),
        (
            "ns.yaml",
            "kind: Namespace\napiVersion: v1\nmetadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}\n",
        ),
    ]);
    let m = load(dir.path()).unwrap();
    assert!(!m.ambient(m.pod("demo", "web").unwrap()));
    let dir = dir_with(&[("pod.yaml", POD)]);
    let m = load(dir.path()).unwrap();
    assert!(!m.ambient(m.pod("demo", "web").unwrap()), "no label anywhere: not in the mesh");
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    let dir = dir_with(files);
    load(dir.path())
        .unwrap_err()
        .iter()
        .map(|e| e.to_string().replace(&dir.path().display().to_string(), "DIR"))
        .collect()
}

#[test]
fn every_problem_names_file_document_and_object() {
    let got = errors(&[
        (
            "bad.yaml",
            &format!(
                "{POD}---\nkind: Pod\napiVersion: v1\nmetadata: {{name: x}}\nspec: {{containers: [{{name: a, image: busybox}}]}}\n"
            ),
        ),
        (
            "kinds.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\n---\n- a list\n",
        ),
        ("syntax.yaml", "kind: Pod\nmetadata: {name: [x\n"),
        (
            "policy.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: n\n  restartPolicy: Sometimes\n  containers: [{name: a, command: [x]}]\n",
        ),
        ("dup.yaml", POD),
        (
            "env.yaml",
            &POD.replace("status.podIP", "status.hostIP").replace("name: web", "name: web2"),
        ),
    ]);
    let expected = [
        "DIR/bad.yaml document 2 (Pod default/x): spec.nodeName: Required value",
        "DIR/kinds.yaml document 1 (VirtualService default/vs): unknown kind \"VirtualService\"",
        "DIR/kinds.yaml document 2: the document is not a mapping",
        "DIR/syntax.yaml document 1: YAML syntax error",
        "DIR/policy.yaml document 1 (Pod default/p): spec.restartPolicy: Unsupported value: \"Sometimes\"",
        "(Pod demo/web): defined more than once",
        "DIR/env.yaml document 1 (Pod demo/web2): spec.containers[0].env[1].valueFrom: Unsupported value",
    ];
    for e in expected {
        assert!(got.iter().any(|g| g.contains(e)), "missing {e:?} in {got:#?}");
    }
    let no_command =
        errors(&[("p.yaml", &POD.replace("    command: [python3, -m, http.server]\n", ""))]);
    assert!(no_command[0].contains("spec.containers[0].command: Required value"), "{no_command:?}");
    let bad_name = errors(&[("p.yaml", &POD.replace("name: web", "name: Web_1"))]);
    assert!(bad_name[0].contains("metadata.name: Invalid value"), "{bad_name:?}");
}
