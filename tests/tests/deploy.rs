//! The container image and the Kubernetes manifests (`Dockerfile`,
//! `deploy/kubernetes/`) fit the host they run: every `CLEAN_HOST_*`
//! variable is one of its flags, the probes and the scrape annotations point
//! at its endpoints and port, the pod runs as the image's user, and the
//! ConfigMap's config, with the Secret's variables, passes `clean-host
//! check` against a real Kafka with no secret shown. No image is built and
//! no cluster applies them here (no container daemon or cluster runs on
//! this machine kind).

use std::collections::BTreeMap;

use clean_host_tests::brokers::{broker, fresh, kafka, produce};
use clean_host_tests::Sandbox;
use serde_yaml::Value;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Each document of the manifest by its kind.
fn manifests() -> BTreeMap<String, Value> {
    let text = repo_file("deploy/kubernetes/clean-host.yaml");
    let mut by_kind = BTreeMap::new();
    for doc in text.split("\n---\n") {
        let value: Value = serde_yaml::from_str(doc).expect("valid YAML");
        let kind = value["kind"].as_str().expect("a kind").to_string();
        assert!(value["apiVersion"].is_string() && value["metadata"]["name"].is_string(), "{kind}: apiVersion and a name");
        by_kind.insert(kind, value);
    }
    by_kind
}

/// The `CLEAN_HOST_*` variables the host reads (from its `--help`).
fn host_variables() -> Vec<String> {
    let help = clean_host_tests::host_command().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("CLEAN_HOST_")).map(str::to_string).collect()
}

#[test]
fn the_image_and_the_manifests_name_only_what_the_host_has() {
    let known = host_variables();
    assert!(known.len() > 10 && known.iter().any(|v| v == "CLEAN_HOST_LISTEN"), "{known:?}");
    let dockerfile = repo_file("Dockerfile");
    let manifests = manifests();
    let deployment = &manifests["Deployment"];
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    // Every CLEAN_HOST_* variable the image or the pod sets is a flag of the host.
    let mut set: Vec<String> = container["env"].as_sequence().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    set.extend(dockerfile.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("CLEAN_HOST_")).map(str::to_string));
    for name in set.iter().filter(|n| n.starts_with("CLEAN_HOST_")) {
        assert!(known.contains(name), "{name} is no flag of clean-host");
    }
    // The port the host listens on is the one probed, exposed and scraped.
    let env = |name: &str| container["env"].as_sequence().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].as_str().unwrap().to_string());
    let listen = env("CLEAN_HOST_LISTEN").expect("the pod sets where the host listens");
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert!(listen.ends_with(&format!(":{port}")) && listen.starts_with("0.0.0.0:"), "{listen} vs {port}");
    assert!(dockerfile.contains(&format!("EXPOSE {port}")) && dockerfile.contains(&format!("CLEAN_HOST_LISTEN=0.0.0.0:{port}")));
    let probe = |which: &str| container[which]["httpGet"]["path"].as_str().unwrap_or_else(|| panic!("{which}")).to_string();
    assert_eq!((probe("startupProbe"), probe("livenessProbe"), probe("readinessProbe")), ("/healthz".into(), "/healthz".into(), "/readyz".into()));
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some(port.to_string().as_str()));
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    // The pod runs as the image's user, not root.
    let uid = pod["spec"]["securityContext"]["runAsUser"].as_u64().unwrap();
    assert!(dockerfile.contains(&format!("USER {uid}")) && dockerfile.contains(&format!("--uid {uid}")), "user {uid}");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert!(dockerfile.contains("STOPSIGNAL SIGTERM") && dockerfile.contains("VOLUME [\"/data\", \"/plugins\"]"));
    // The config file it is given is the ConfigMap's, mounted where the args say.
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let mount = container["volumeMounts"].as_sequence().unwrap().iter().find(|m| m["name"] == "config").unwrap()["mountPath"].as_str().unwrap();
    assert_eq!(args, ["--config", &format!("{mount}/config.toml")]);
    assert!(manifests["ConfigMap"]["data"]["config.toml"].is_string());
    // Requests cover the measured peak RSS (BENCHMARKS.md: 65 MiB; broker pipelines ~170 MiB).
    let memory = container["resources"]["requests"]["memory"].as_str().unwrap();
    assert!(memory.strip_suffix("Mi").and_then(|m| m.parse::<u64>().ok()).is_some_and(|m| m >= 200), "{memory}");
}

/// The ConfigMap's config, with the Secret's values and the pod's
/// variables in the environment (the broker, its login and CA and the paths
/// made this machine's: the SASL/SCRAM over TLS listener of
/// `scripts/brokers`), passes `clean-host check` against that Kafka; what it
/// shows of it has no secret.
#[test]
fn the_configmaps_config_runs_with_the_secrets_environment() {
    let manifests = manifests();
    let s = Sandbox::with_bundled();
    let config = s.write("config.toml", manifests["ConfigMap"]["data"]["config.toml"].as_str().unwrap());
    let topic = fresh("deploy");
    produce(&s, &format!("{}/{topic}", kafka()), 10, &[], 1);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let container = &manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0];
    for e in container["env"].as_sequence().unwrap() {
        env.insert(e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into());
    }
    for (k, v) in manifests["Secret"]["stringData"].as_mapping().unwrap() {
        env.insert(k.as_str().unwrap().into(), v.as_str().unwrap().into());
    }
    let bootstrap = broker("KAFKA_SECURE");
    let password = broker("KAFKA_PASSWORD");
    env.insert("KAFKA_BOOTSTRAP".into(), bootstrap.clone());
    env.insert("KAFKA_TOPIC".into(), topic.clone());
    env.insert("KAFKA_USERNAME".into(), broker("KAFKA_USER"));
    env.insert("KAFKA_PASSWORD".into(), password.clone());
    env.insert("KAFKA_CA_LOCATION".into(), broker("KAFKA_CA"));
    env.insert("CLEAN_HOST_DATA_DIR".into(), s.path("data").to_str().unwrap().into());
    env.insert("CLEAN_HOST_PLUGINS".into(), s.plugins().to_str().unwrap().into());
    env.remove("CLEAN_HOST_LISTEN");
    let out = clean_host_tests::host_command()
        .args(["check", "--show-config", "--config", config.to_str().unwrap()])
        .envs(&env)
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    for shown in [
        format!("source = \"kafka://{bootstrap}/{topic}?group=orders-quality\""),
        "\"sasl.password\" = \"env:KAFKA_PASSWORD\"".into(),
        "api_token = \"env:API_TOKEN\"".into(),
    ] {
        assert!(stdout.contains(&shown), "{shown} is not shown:\n{stdout}");
    }
    for secret in ["change-me", &password] {
        assert!(!format!("{stdout}{stderr}").contains(secret), "a secret shows:\n{stdout}{stderr}");
    }
}
