//! The commands besides the run: `plugin list`, `check`, `generate`, and
//! clear errors for bad input.

use clean_host_tests::{Sandbox, BUNDLED};

#[test]
fn plugin_list_shows_names_versions_and_metrics() {
    let s = Sandbox::with_bundled();
    let run = s.run(&["plugin", "list", "--json"]);
    run.assert_ok();
    let listed: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = listed.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, BUNDLED);
    let outliers = listed.iter().find(|p| p["name"] == "outliers").unwrap();
    assert_eq!(outliers["version"], "0.1.0");
    assert_eq!(outliers["metrics"][0], "outlier_rate");
    assert_eq!(outliers["sha256"].as_str().unwrap().len(), 64);
    let table = s.run(&["plugin", "list"]);
    assert!(table.stdout.contains("completeness") && table.stdout.contains("null_rate"), "{}", table.stdout);
    // The spelling before `plugin list`, kept for a release.
    let old = s.run(&["plugins", "--json"]);
    assert_eq!(old.stdout.lines().count(), BUNDLED.len(), "{}", old.stderr);
}

/// A broker pipeline's checkpoints are listed from its broker; one that
/// cannot be reached is said, and the plugins are listed all the same.
#[test]
fn plugin_list_says_which_broker_it_cannot_ask_for_checkpoints() {
    let s = Sandbox::with_bundled();
    let config = s.write("broker.toml", "[[pipelines]]\nname = \"orders\"\nsource = \"redis://127.0.0.1:1/orders?group=g&consumer=c\"\n");
    let run = s.run(&["plugin", "list", "--json", "--config", config.to_str().unwrap()]);
    run.assert_ok();
    assert_eq!(run.stdout.lines().count(), BUNDLED.len(), "{}", run.stdout);
    assert!(run.stderr.contains("pipeline orders of tenant default: the checkpoints in its broker are not listed: cannot reach 127.0.0.1:1"), "{}", run.stderr);
}

/// Run flags belong to the run: given to a command they are an error, not
/// ignored; the global flags go on either side of a command.
#[test]
fn run_flags_are_not_taken_by_commands() {
    let s = Sandbox::with_bundled();
    for args in [&["check", "--source", "x.jsonl"][..], &["--window", "5", "check"], &["--records", "5", "generate"]] {
        let run = s.run(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("--source") || run.stderr.contains("--window") || run.stderr.contains("--records"), "{}", run.stderr);
    }
    let help = s.run(&["plugin", "new", "--help"]);
    assert!(help.stdout.contains("--lang") && !help.stdout.contains("--source") && !help.stdout.contains("--window"), "{}", help.stdout);
    let before =
        clean_host_tests::host_command().arg("--plugins").arg(s.plugins()).args(["--data-dir", "data", "check"]).current_dir(s.dir.path()).output().unwrap();
    assert!(before.status.success(), "{}", String::from_utf8_lossy(&before.stderr));
}

/// Each run flag may come from `CLEAN_HOST_FLAG` (a container's
/// environment); the command line wins, and a command takes them quietly.
#[test]
fn run_flags_come_from_the_environment_and_the_command_line_wins() {
    let s = Sandbox::with_bundled();
    s.generate("orders.jsonl", 3000, &[]);
    let plugins = s.plugins();
    let env = [
        ("CLEAN_HOST_PLUGINS", plugins.to_str().unwrap()),
        ("CLEAN_HOST_DATA_DIR", "data"),
        ("CLEAN_HOST_SOURCE", "orders.jsonl"),
        ("CLEAN_HOST_WINDOW", "500"),
        ("CLEAN_HOST_QUIET", "true"),
    ];
    let run = |args: &[&str]| {
        let out = clean_host_tests::host_command().args(args).envs(env).current_dir(s.dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let windows = |stderr: &str| serde_json::from_str::<serde_json::Value>(stderr.lines().last().unwrap()).unwrap()["windows"].clone();
    assert_eq!(windows(&run(&[]).1), 6, "source and window size from the environment");
    assert_eq!(windows(&run(&["--window", "1000"]).1), 3, "the command line wins");
    assert!(run(&["check"]).0.contains("8 plugin(s)"), "a command with run flags in the environment");
}

/// A config made of environment variables, as a container gets it:
/// `check --show-config` shows what runs, every default filled in, and no
/// secret, whether it came through `${VAR}` or is read later (`env:VAR`).
#[test]
fn check_shows_the_config_from_the_environment_without_its_secrets() {
    let s = Sandbox::with_bundled();
    let config = s.write(
        "env.toml",
        r#"
        [[tenants]]
        name = "default"
        api_token = "${API_TOKEN}"
        [[pipelines]]
        name = "${PIPELINE}"
        source = "${SOURCE}"
        [pipelines.window]
        size = ${WINDOW:-700}
        [pipelines.broker.kafka]
        "sasl.password" = "env:KAFKA_PASSWORD"
        "#,
    );
    s.generate("orders.jsonl", 10, &[]);
    let env = [("PIPELINE", "orders"), ("SOURCE", "orders.jsonl"), ("API_TOKEN", "token-from-env-0123456789"), ("KAFKA_PASSWORD", "kafka-pw-from-env")];
    let out = clean_host_tests::host_command()
        .args(["check", "--show-config", "--config", config.to_str().unwrap(), "--plugins", s.plugins().to_str().unwrap()])
        .envs(env)
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    for shown in ["name = \"orders\"", "size = 700", "source = \"orders.jsonl\"", "api_token = \"***\"", "env:KAFKA_PASSWORD", "retention_hours = 168"] {
        assert!(stdout.contains(shown), "{shown} is not shown:\n{stdout}");
    }
    assert!(!format!("{stdout}{stderr}").contains("from-env"), "a secret shows:\n{stdout}{stderr}");
}

/// A broker URL missing its `//` is no file name to show: the error names
/// the scheme and how to write it, and not the login after it.
#[test]
fn a_mistyped_broker_url_is_named_without_its_login() {
    let s = Sandbox::with_bundled();
    for source in ["redis:/monitor:pw-typo@127.0.0.1:6379/orders", "kafka:127.0.0.1:9092/orders?x=pw-typo", "Pulsar:/pw-typo@h/t/n/s"] {
        let run = s.run(&["--source", source, "--until-end"]);
        assert_ne!(run.code, Some(0), "{source}");
        assert!(run.stderr.contains("URL but is not one (write "), "{source}: {}", run.stderr);
        assert!(!format!("{}{}", run.stdout, run.stderr).contains("pw-typo"), "{source}: {}", run.stderr);
    }
}

#[test]
fn check_accepts_a_good_config() {
    let s = Sandbox::with_bundled();
    s.generate("orders.jsonl", 10, &[]);
    let config = s.write(
        "good.toml",
        r#"
        [[pipelines]]
        name = "orders"
        source = "orders.jsonl"
        detectors = ["outliers", "validity"]
        [pipelines.detector_config.validity]
        rules = [{ column = "amount", min = 0 }]
        "#,
    );
    let run = s.run(&["check", "--config", config.to_str().unwrap()]);
    run.assert_ok();
    assert!(run.stdout.contains("1 pipeline(s), 1 tenant(s), 8 plugin(s)") && run.stdout.contains("orders"), "{}", run.stdout);
}

#[test]
fn bad_input_is_named_and_fails() {
    let s = Sandbox::with_bundled();
    s.generate("orders.jsonl", 10, &[]);
    let cases: [(&str, &str, &str); 5] = [
        ("typo.toml", "[[pipelines]]\nname = \"a\"\nsource = \"orders.jsonl\"\nwindow_size = 5\n", "unknown field `window_size`"),
        ("unknown.toml", "[[pipelines]]\nname = \"a\"\nsource = \"orders.jsonl\"\ndetectors = [\"nope\"]\n", "no plugin named 'nope'"),
        (
            "rejected.toml",
            "[[pipelines]]\nname = \"a\"\nsource = \"orders.jsonl\"\n[pipelines.detector_config.validity]\nrules = [{ column = \"x\", pattern = \"(\" }]\n",
            "bad pattern",
        ),
        ("missing.toml", "[[pipelines]]\nname = \"a\"\nsource = \"no-such-file.jsonl\"\n", "no-such-file.jsonl"),
        ("window.toml", "[[pipelines]]\nname = \"a\"\nsource = \"orders.jsonl\"\n[pipelines.window]\nkind = \"time\"\n", "duration_ms"),
    ];
    for (file, text, needle) in cases {
        let config = s.write(file, text);
        for command in [&["check"][..], &[]] {
            let mut args = command.to_vec();
            args.extend(["--config", config.to_str().unwrap()]);
            let run = s.run(&args);
            assert_eq!(run.code, Some(1), "{file} {command:?}: {}", run.stderr);
            assert!(run.stderr.contains(needle), "{file}: expected {needle:?} in {}", run.stderr);
        }
    }
    let run = s.run(&["--config", "absent.toml"]);
    assert!(run.code == Some(1) && run.stderr.contains("absent.toml"), "{}", run.stderr);
}

/// Plugins load side by side, yet what a folder's faults read as does not
/// depend on which finished first: the first fault in name order stops a
/// start, and the listing names every fault in name order.
#[test]
fn a_folders_faults_are_told_in_name_order_whatever_loads_first() {
    let s = Sandbox::with_bundled();
    std::fs::write(s.plugins().join("a-broken.wasm"), b"\0asm not really").unwrap();
    std::fs::write(s.plugins().join("z-broken.wasm"), b"not wasm at all").unwrap();
    // Named before volume.wasm ('-' sorts before '.'): the copy counts as the first of the name.
    std::fs::copy(clean_host_tests::bundled("volume"), s.plugins().join("volume-copy.wasm")).unwrap();
    for _ in 0..3 {
        let run = s.run(&["check"]);
        assert_eq!(run.code, Some(1));
        assert!(run.stderr.contains("a-broken.wasm") && !run.stderr.contains("z-broken.wasm"), "{}", run.stderr);
        let listed = s.run(&["plugin", "list", "--json"]);
        listed.assert_ok();
        let rows: Vec<serde_json::Value> = listed.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let errors: Vec<&str> = rows.iter().filter(|r| r["status"] == "rejected").map(|r| r["error"].as_str().unwrap()).collect();
        assert_eq!(errors.len(), 3, "{}", listed.stdout);
        assert!(errors[0].contains("a-broken.wasm") && errors[0].contains("not a usable component"), "{errors:?}");
        assert!(
            errors[1].contains("two plugins are named 'volume'") && errors[1].contains("volume-copy.wasm and ") && errors[1].ends_with("/volume.wasm"),
            "{errors:?}"
        );
        assert!(errors[2].contains("z-broken.wasm") && errors[2].contains("no \\0asm header"), "{errors:?}");
        assert_eq!(rows.iter().filter(|r| r["status"] == "active").count(), BUNDLED.len(), "{}", listed.stdout);
    }
}

#[test]
fn an_unreadable_plugin_is_named() {
    let s = Sandbox::with_bundled();
    std::fs::write(s.plugins().join("broken.wasm"), b"\0asm not really").unwrap();
    let run = s.run(&["check"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("broken.wasm") && run.stderr.contains("not a usable component"), "{}", run.stderr);
    std::fs::write(s.plugins().join("broken.wasm"), b"").unwrap();
    std::fs::write(s.plugins().join("outliers.toml"), b"memory = 3\n").unwrap();
    std::fs::remove_file(s.plugins().join("broken.wasm")).unwrap();
    // The host refuses to start; the listing shows the others and what is wrong with this one.
    let run = s.run(&["--records", "10"]);
    assert!(run.code == Some(1) && run.stderr.contains("outliers.toml") && run.stderr.contains("unknown field"), "{}", run.stderr);
    let listed = s.run(&["plugin", "list", "--json"]);
    listed.assert_ok();
    let rows: Vec<serde_json::Value> = listed.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.iter().filter(|r| r["status"] == "active").count(), BUNDLED.len() - 1, "{}", listed.stdout);
    let rejected = rows.iter().find(|r| r["status"] == "rejected").expect("a rejected row");
    assert!(rejected["error"].as_str().unwrap().contains("outliers.toml"), "{rejected}");
}

#[test]
fn an_empty_plugins_folder_is_an_error() {
    let s = Sandbox::empty();
    let run = s.run(&["--records", "10"]);
    assert!(run.code == Some(1) && run.stderr.contains("no plugins"), "{}", run.stderr);
}

#[test]
fn the_embedded_default_runs_the_generator_through_every_detector() {
    let s = Sandbox::with_bundled();
    let run = s.run(&["--records", "20000", "--format", "json"]);
    run.assert_ok();
    let summary = run.summary();
    assert_eq!((summary["records"].as_u64(), summary["windows"].as_u64()), (Some(20_000), Some(20)));
    assert_eq!(summary["plugins"].as_array().unwrap().len(), 8);
    assert_eq!(run.alerts().len(), 0, "{}", run.stdout);
}

#[test]
fn generate_is_repeatable_and_validates_faults() {
    let s = Sandbox::with_bundled();
    let run = s.run(&["generate", "--records", "10", "--inject", "meteor@1+2"]);
    assert!(run.code == Some(1) && run.stderr.contains("bad fault 'meteor@1+2'"), "{}", run.stderr);
    let run = s.run(&["generate"]);
    assert!(run.code == Some(1) && run.stderr.contains("--records"), "{}", run.stderr);
}
