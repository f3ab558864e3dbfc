//! Protocol conformance: the Autobahn TestSuite's fuzzingclient cases (run by kosoku,
//! since Autobahn itself needs Python 2) against wshost serving the shipped
//! examples/routes.toml, echo route, through the wasm echo controller. Compression
//! (12.*, 13.*) is not offered by wshost, so those cases are excluded.
//!
//! Every case must be OK except the documented ones below; the counts per behaviour are
//! written to `target/autobahn/summary.md` (docs/internals/conformance.md's table comes from there).

use std::collections::BTreeMap;
use std::process::Stdio;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::harness::{STARTUP_GUARD, Server, kosoku, workspace_root};

/// Cases allowed to be something other than OK, with the behaviour and the reason.
const EXPECTED: &[(&str, &str, &str)] = &[
    (
        "6.4.3",
        "NON-STRICT",
        "invalid UTF-8 inside a frame that arrives in slow pieces is caught when the frame is complete, not mid-frame (tungstenite validates whole frames)",
    ),
    ("6.4.4", "NON-STRICT", "as 6.4.3"),
    (
        "7.1.6",
        "INFORMATIONAL",
        "Autobahn only records how a large message after a close is handled",
    ),
    (
        "7.13.1",
        "INFORMATIONAL",
        "close code 5000+: Autobahn only records the answer (wshost fails with 1002)",
    ),
    ("7.13.2", "INFORMATIONAL", "as 7.13.1"),
];

/// The number of fuzzingclient cases outside 12.* and 13.*.
const CASES: usize = 301;

#[tokio::test]
async fn the_autobahn_fuzzingclient_cases_pass_through_the_wasm_echo() -> Result<()> {
    let kosoku = kosoku();
    let routes = workspace_root().join("examples").join("routes.toml");
    let server = Server::start_file(&routes).await?;
    let reports = tempfile::tempdir()?;

    let url = format!("ws://{}/echo/autobahn", server.addr());
    let run = tokio::process::Command::new(kosoku)
        .args(["-m", "fuzzingclient", "-x", "12.*", "-x", "13.*", "-o"])
        .arg(reports.path())
        .arg(&url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(STARTUP_GUARD, run)
        .await
        .context("kosoku did not finish (hang guard)")??;
    let index = std::fs::read_to_string(reports.path().join("index.json")).with_context(|| {
        format!(
            "kosoku wrote no index.json ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let index: Value = serde_json::from_str(&index)?;
    let cases = index
        .as_object()
        .and_then(|agents| agents.values().next())
        .and_then(Value::as_object)
        .context("index.json has no agent")?;

    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for (id, case) in cases {
        let field = |name: &str| case[name].as_str().unwrap_or("missing").to_owned();
        let (behavior, close) = (field("behavior"), field("behaviorClose"));
        *counts.entry((behavior.clone(), close.clone())).or_default() += 1;
        let allowed = EXPECTED
            .iter()
            .find(|(case, _, _)| case == id)
            .map_or("OK", |(_, behavior, _)| behavior);
        let close_ok = close == "OK" || close == allowed;
        if behavior != allowed || !close_ok {
            unexpected.push(format!("{id}: behavior {behavior}, close {close}"));
        }
    }
    write_summary(&counts)?;
    assert!(
        unexpected.is_empty(),
        "cases not as documented:\n{}",
        unexpected.join("\n")
    );
    assert_eq!(cases.len(), CASES, "kosoku ran another set of cases");
    Ok(())
}

/// Writes the counts per (behavior, behaviorClose) as a Markdown table.
fn write_summary(counts: &BTreeMap<(String, String), usize>) -> Result<()> {
    let mut table = String::from("| behavior | behaviorClose | cases |\n|---|---|---|\n");
    for ((behavior, close), n) in counts {
        table += &format!("| {behavior} | {close} | {n} |\n");
    }
    let dir = workspace_root().join("target").join("autobahn");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("summary.md"), &table)?;
    eprintln!("{table}");
    Ok(())
}
