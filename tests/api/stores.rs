//! The whole integration suite on PostgreSQL as well as SQLite: the same
//! tests, not a copy. `cargo test` runs the suite on SQLite; this test runs
//! this very binary again with `KEYTURN_TEST_STORE=postgres`, where every
//! server the helpers start gets its own fresh PostgreSQL database, and
//! fails if any test fails there. Without PostgreSQL it prints one SKIP
//! line and passes, except in CI (`CI` set), where that is a failure.
//!
//! Left out of the second pass: tests that already run on PostgreSQL by
//! name (`postgres::`, `user_races::`, `propagation::`, `faults::`), the
//! CLI tests (their processes get SQLite stores of their own;
//! `postgres::cli_on_postgres` covers the CLI there), tests
//! of no store (`layers::` reads the sources, `tools::`) and tests of what
//! the browser, Python or the README see (`browser::`, `flask::`,
//! `interop::`, `readme::` start their servers on the default store).

use std::io::Write as _;
use std::process::Command;

const NOT_AGAIN: [&str; 12] = [
    "stores::",
    "cli::",
    "postgres::",
    "user_races::",
    "propagation::",
    "faults::",
    "layers::",
    "tools::",
    "browser::",
    "flask::",
    "interop::",
    "readme::",
];

#[tokio::test]
async fn the_whole_suite_passes_on_postgresql_too() {
    if crate::helpers::postgres_pass() {
        return; // this is the PostgreSQL pass itself
    }
    if !crate::helpers::postgres_available().await {
        return;
    }
    let mut pass = Command::new(std::env::current_exe().expect("test binary"));
    pass.env("KEYTURN_TEST_STORE", "postgres");
    for prefix in NOT_AGAIN {
        pass.args(["--skip", prefix]);
    }
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || pass.output())
        .await
        .expect("joined")
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .rfind(|line| line.starts_with("test result:"))
        .unwrap_or("no summary line")
        .to_owned();
    // Straight to the terminal: the harness captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "PostgreSQL pass of the suite ({:.0} s): {summary}",
        started.elapsed().as_secs_f64()
    );
    if !output.status.success() {
        let failures: Vec<&str> = stdout
            .lines()
            .filter(|line| line.ends_with("FAILED") || line.starts_with("---- "))
            .collect();
        let tail: String = stdout
            .lines()
            .rev()
            .take(120)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "the suite failed on PostgreSQL:\n{}\n\n{tail}\n{}",
            failures.join("\n"),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
