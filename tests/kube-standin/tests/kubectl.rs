//! kubectl, an independent client, against the stand-in: what it reads,
//! applies, replaces, waits for and deletes behaves as on a real API
//! server. Needs `kubectl` (1.32) on PATH; without it the test prints
//! `SKIPPED` and passes, except in CI (`CI=true`), where it fails.

use std::path::Path;
use std::process::{Command, Output};

use rollcage_kube_standin::{StandIn, Timing};
use serde_json::{Value, json};

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skip_or_fail(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}, and CI=true: install kubernetes-client (.ci/run does)");
    }
    println!("SKIPPED: {why}");
    true
}

struct Kubectl<'a> {
    dir: &'a Path,
    kubeconfig: std::path::PathBuf,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .arg("--request-timeout=20s")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir)
            .env("KUBECACHEDIR", self.dir.join("cache"))
            .output()
            .expect("kubectl runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{stdout}\n{stderr}"
        );
        stdout
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "kubectl {args:?} succeeded:\n{text}");
        text
    }

    fn file(&self, name: &str, v: &Value) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path.to_string_lossy().into_owned()
    }
}

fn deployment(name: &str, image: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas, "progressDeadlineSeconds": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}}
        }
    })
}

#[test]
fn kubectl_agrees_with_the_stand_in() {
    if !kubectl_available() && skip_or_fail("kubectl is not installed") {
        return;
    }
    let standin = StandIn::start_with(Timing::default());
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl {
        dir: dir.path(),
        kubeconfig: standin.write_kubeconfig(dir.path()),
    };

    // Server-side apply creates; get reads back what the server holds.
    let web = k.file("web.json", &deployment("web", "web:1.0", 2));
    let out = k.ok(&["apply", "--server-side", "--validate=false", "-f", &web]);
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let got: Value = serde_json::from_str(&k.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    assert_eq!(got["metadata"]["generation"], 1);
    assert_eq!(got["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(got["metadata"]["managedFields"][0]["operation"], "Apply");

    // The simulated controller rolls it out, as rollout status judges it.
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(out.contains("successfully rolled out"), "{out}");

    // A replace with the resourceVersion read before a later change is refused.
    let stale = k.file("stale.json", &got);
    let web2 = k.file("web2.json", &deployment("web", "web:1.1", 2));
    k.ok(&["apply", "--server-side", "--validate=false", "-f", &web2]);
    let err = k.fails(&["replace", "--validate=false", "-f", &stale]);
    assert!(
        err.contains("Operation cannot be fulfilled on deployments.apps \"web\""),
        "{err}"
    );
    let now = standin.get("deployments", "default", "web").unwrap();
    assert_eq!(
        now["metadata"]["generation"], 2,
        "a spec change bumps the generation"
    );
    assert_eq!(
        now["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1.1"
    );

    // Another manager changing a field kubectl applied is a conflict.
    let mut other = deployment("web", "web:1.1", 5);
    other["spec"] = json!({"replicas": 5});
    let other = k.file("other.json", &other);
    let err = k.fails(&[
        "apply",
        "--server-side",
        "--validate=false",
        "--field-manager=autoscaler",
        "-f",
        &other,
    ]);
    assert!(
        err.contains("conflict with \"kubectl\"") && err.contains(".spec.replicas"),
        "{err}"
    );

    // Creating what exists is AlreadyExists; the selector is immutable; a
    // label value is checked by the server.
    let err = k.fails(&["create", "--validate=false", "-f", &web2]);
    assert!(
        err.contains("deployments.apps \"web\" already exists"),
        "{err}"
    );
    let err = k.fails(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#,
    ]);
    assert!(
        err.contains("spec.selector") && err.contains("field is immutable"),
        "{err}"
    );
    let err = k.fails(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"team":"-payments"}}}"#,
    ]);
    assert!(
        err.contains("is invalid") && err.contains("a valid label must be"),
        "{err}"
    );

    // A name that is not a DNS subdomain is Invalid.
    let bad = k.file("bad.json", &deployment("Web_1", "web:1.0", 1));
    let err = k.fails(&["apply", "--server-side", "--validate=false", "-f", &bad]);
    assert!(
        err.contains("is invalid") && err.contains("metadata.name"),
        "{err}"
    );

    // A crash-looping image never rolls out: the progress deadline says so.
    let crash = k.file("crash.json", &deployment("crash", "web:crashloop", 1));
    k.ok(&["apply", "--server-side", "--validate=false", "-f", &crash]);
    let err = k.fails(&["rollout", "status", "deployment/crash", "--timeout=30s"]);
    assert!(err.contains("exceeded its progress deadline"), "{err}");

    // Labels are metadata: no new generation.
    k.ok(&["label", "deployment", "crash", "team=payments"]);
    let crash = standin.get("deployments", "default", "crash").unwrap();
    assert_eq!(crash["metadata"]["generation"], 1);
    assert_eq!(crash["metadata"]["labels"]["team"], "payments");

    // HTTPRoute is a custom resource: no strategic merge patch for it.
    standin.seed(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "web-stable", "port": 80}]}]}
    }));
    let err = k.fails(&[
        "patch",
        "httproute",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"hostnames":["x"]}}"#,
    ]);
    assert!(
        err.contains("unknown format") || err.contains("415"),
        "{err}"
    );
    k.ok(&[
        "patch",
        "httproute",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"hostnames":["web.example"]}}"#,
    ]);
    let route = standin.get("httproutes", "default", "web").unwrap();
    assert_eq!(route["metadata"]["generation"], 2);
    assert_eq!(route["spec"]["hostnames"][0], "web.example");

    // A Job runs to completion and kubectl waits for it.
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "default"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "migrate", "image": "web:1.1", "command": ["sh", "-c", "migrate up"]}]}}}
    });
    let job = k.file("job.json", &job);
    k.ok(&["apply", "--server-side", "--validate=false", "-f", &job]);
    let out = k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/migrate",
        "--timeout=30s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let log = k.ok(&["logs", "migrate-run"]);
    assert!(log.contains("running: sh -c migrate up"), "{log}");

    // Delete, and the pods the Deployment owned go with it.
    let out = k.ok(&["delete", "deployment", "web"]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    assert!(standin.get("deployments", "default", "web").is_none());
    let pods = standin.list("pods", "default");
    assert!(
        pods.iter().all(|p| p["metadata"]["labels"]["app"] != "web"),
        "{pods:?}"
    );
    let err = k.fails(&["get", "deployment", "web", "-o", "json"]);
    assert!(err.contains("deployments.apps \"web\" not found"), "{err}");

    // Every request kubectl sent carried the token over TLS: none was refused.
    let unauthorized: Vec<_> = standin
        .requests()
        .into_iter()
        .filter(|r| r.status == 401)
        .collect();
    assert!(unauthorized.is_empty(), "{unauthorized:?}");
}
