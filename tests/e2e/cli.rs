//! The command line: `strangler check` (validate, explain) and `strangler demo`.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::binary;

fn strangler(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

#[test]
fn every_example_route_file_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let output = strangler(&["check", path.to_str().unwrap()]);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                text(&output)
            );
            assert!(text(&output).contains(": ok"), "{}", text(&output));
            if path.ends_with("passthrough.yaml") {
                assert!(
                    text(&output).contains(": ok (0 routes, 1 upstream, version "),
                    "{}",
                    text(&output)
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the example route files in deploy/examples"
    );
}

#[test]
fn an_invalid_file_fails_with_every_problem_named_by_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        "upstreams:\n  monolith: { url: \"http://127.0.0.1:8000\" }\ndefault: monolith\nroutes:\n  - name: a\n    match: { path_prefix: /a }\n    to: nowhere\n  - name: a\n    match: { path_regex: \"(\" }\n    to: monolith\n",
    )
    .unwrap();
    let output = strangler(&["check", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output);
    assert!(
        out.contains("routes.yaml:7:"),
        "unknown upstream on line 7:\n{out}"
    );
    assert!(out.contains("nowhere"), "{out}");
    assert!(
        out.contains("routes.yaml:8:") && out.contains("duplicate"),
        "duplicate name on line 8:\n{out}"
    );
    assert!(out.contains("path_regex"), "{out}");
    assert!(out.contains("routes.yaml: invalid (3 problems)"), "{out}");

    std::fs::write(&file, "upstreams: {}\ndefault: monolith\n").unwrap();
    let out = text(&strangler(&["check", file.to_str().unwrap()]));
    assert!(out.contains("routes.yaml: invalid (2 problems)"), "{out}");
    std::fs::write(
        &file,
        "upstreams:\n  monolith: { url: \"http://127.0.0.1:8000\" }\ndefault: nowhere\n",
    )
    .unwrap();
    let out = text(&strangler(&["check", file.to_str().unwrap()]));
    assert!(out.contains("routes.yaml: invalid (1 problem)\n"), "{out}");
}

#[test]
fn explain_names_the_route_and_why_earlier_ones_did_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        "upstreams:\n  monolith: { url: \"http://127.0.0.1:8000\" }\n  catalog: { url: \"http://127.0.0.1:9200\" }\ndefault: monolith\nroutes:\n  - name: beta\n    match: { path_prefix: /catalog, headers: { x-beta: \"true\" } }\n    to: catalog\n  - name: all-catalog\n    match: { path_prefix: /catalog }\n    to: monolith\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let plain = text(&strangler(&["check", f, "--explain", "GET /catalog/7"]));
    assert!(plain.contains("all-catalog"), "{plain}");
    assert!(
        plain.contains("x-beta"),
        "says why beta did not match:\n{plain}"
    );
    let output = strangler(&[
        "check",
        f,
        "--explain",
        "GET /catalog/7",
        "-H",
        "x-beta: true",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let beta = text(&output);
    assert!(beta.contains("beta") && beta.contains("catalog"), "{beta}");
}

#[test]
fn the_demo_runs_its_sample_traffic_and_exits() {
    let child = Command::new(binary())
        .args(["demo", "--once", "--listen", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its files (route file, hook) live in a directory named after it, gone at its exit.
    let files = std::env::temp_dir().join(format!("strangler-demo-{}", child.id()));
    let output = child.wait_with_output().unwrap();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(!files.exists(), "{} left behind", files.display());
    assert!(out.contains("--once: the demo stops here"), "{out}");
    assert!(!out.contains("Ctrl-C stops the demo"), "{out}");
    assert!(
        out.contains("invoices-service"),
        "/invoices is served by the new service:\n{out}"
    );
    assert!(out.contains("\"served_by\":\"monolith\""), "{out}");
    assert!(out.contains("501"), "{out}");
    assert!(
        out.contains("parallel run of /payroll: 3 comparisons"),
        "{out}"
    );
    assert!(out.contains("\"match\":3"), "{out}");
    assert!(
        out.contains("x-decorated-by: strangler hook for route orders"),
        "{out}"
    );
}

#[test]
fn the_demo_reads_its_own_variables_not_those_of_run() {
    // A shell set up for `run`: a list of listeners and an admin address the demo must
    // not try to use.
    let output = Command::new(binary())
        .args(["demo", "--once"])
        .env("STRANGLER_LISTEN", "0.0.0.0:1,0.0.0.0:2")
        .env("STRANGLER_ADMIN", "not an address")
        .env("STRANGLER_DEMO_LISTEN", "127.0.0.1:0")
        .env("STRANGLER_DEMO_ADMIN", "127.0.0.1:0")
        .output()
        .unwrap();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("invoices-service"), "{out}");
    // Ephemeral ports from STRANGLER_DEMO_*, not the defaults 8080 and 9901.
    assert!(
        !out.contains("127.0.0.1:8080/") && !out.contains("127.0.0.1:9901/"),
        "{out}"
    );
}
