//! A bad routes.toml or controller stops `wshost check` and `wshost run` with exit code 1
//! and an `error: ...` message that points at the problem: file, line and key, or the
//! controller's path, or why the wasm is not a component (or not of this host's WIT
//! version).

use std::process::Output;

use anyhow::Result;

use crate::harness::{Route, RoutesDir, check, guests, routes_toml, run_to_exit};

/// The stderr of a run that must have failed with exit code 1 and an `error:` message.
fn failure(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("error: "), "stderr:\n{stderr}");
    stderr
}

/// A routes.toml whose fourth line is an unknown key.
const UNKNOWN_KEY: &str =
    "[[route]]\nmatch = \"/x/*\"\ncontroller = \"x.wasm\"\ncolour = \"red\"\n";

#[tokio::test]
async fn an_unknown_key_names_file_line_and_key() -> Result<()> {
    let dir = RoutesDir::new(UNKNOWN_KEY)?;
    let stderr = failure(&check(&dir.routes()).await?);
    let at = format!("{}:4:", dir.routes().display());
    assert!(stderr.contains(&at), "expected {at:?} in:\n{stderr}");
    assert!(stderr.contains("`colour`"), "stderr:\n{stderr}");
    Ok(())
}

#[tokio::test]
async fn run_fails_like_check_on_a_bad_file() -> Result<()> {
    let dir = RoutesDir::new(UNKNOWN_KEY)?;
    let routes = dir.routes();
    let output = run_to_exit(&routes).await?;
    let stderr = failure(&output);
    assert!(stderr.contains("`colour`"), "stderr:\n{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "run must not listen with a bad file"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_toml_names_file_and_line() -> Result<()> {
    let text = "listen = \"127.0.0.1:0\"\n\n[[route]\ncontroller = \"x.wasm\"\n";
    let dir = RoutesDir::new(text)?;
    let stderr = failure(&check(&dir.routes()).await?);
    let at = format!("{}:3:", dir.routes().display());
    assert!(stderr.contains(&at), "expected {at:?} in:\n{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_missing_controller_file_names_the_path() -> Result<()> {
    let routes = routes_toml(&[Route::to_controller("no-such-controller.wasm")]);
    let dir = RoutesDir::new(&routes)?;
    let stderr = failure(&check(&dir.routes()).await?);
    assert!(
        stderr.contains("no-such-controller.wasm"),
        "stderr:\n{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_core_module_is_not_a_component() -> Result<()> {
    let dir = RoutesDir::new(&routes_toml(&[Route::to_controller("core.wasm")]))?;
    // The smallest valid core module: magic and version 1.
    let core = dir.write("core.wasm", b"\0asm\x01\0\0\0")?;
    let stderr = failure(&check(&dir.routes()).await?);
    assert!(
        stderr.contains("is not a WebAssembly component"),
        "stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&core.display().to_string()) || stderr.contains("core.wasm"),
        "stderr:\n{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn garbage_is_not_a_component() -> Result<()> {
    let dir = RoutesDir::new(&routes_toml(&[Route::to_controller("garbage.wasm")]))?;
    dir.write("garbage.wasm", b"this is not wasm at all")?;
    let stderr = failure(&check(&dir.routes()).await?);
    assert!(
        stderr.contains("is not a WebAssembly component"),
        "stderr:\n{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_component_of_another_wit_version_is_refused_naming_both() -> Result<()> {
    let routes = routes_toml(&[Route::to(&guests().old_wit)]);
    let dir = RoutesDir::new(&routes)?;
    let expected = "old_wit.wasm` was built against wshost:controller@0.1.0; \
                    this wshost speaks wshost:controller@0.2.0";
    let stderr = failure(&check(&dir.routes()).await?);
    assert!(stderr.contains(expected), "stderr:\n{stderr}");

    // `run` refuses it the same way instead of serving without its handshake hook.
    let routes = dir.routes();
    let output = run_to_exit(&routes).await?;
    let stderr = failure(&output);
    assert!(stderr.contains(expected), "stderr:\n{stderr}");
    Ok(())
}

/// Asserts `check` fails on `routes` with `file:line:` and every one of `needles`.
async fn check_fails_with(routes: &str, line: usize, needles: &[&str]) -> Result<()> {
    let dir = RoutesDir::new(routes)?;
    let stderr = failure(&check(&dir.routes()).await?);
    let at = format!("{}:{line}:", dir.routes().display());
    assert!(stderr.contains(&at), "expected {at:?} in:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn a_filter_of_unknown_kind_or_with_an_unknown_key_is_named() -> Result<()> {
    check_fails_with(
        "[[route]]\ncontroller = \"x.wasm\"\nfilters = [{ kind = \"firewall\" }]\n",
        3,
        &["`route[0].filters[0]`", "unknown variant `firewall`"],
    )
    .await?;
    check_fails_with(
        "[filters.o]\nkind = \"origin\"\nalow = [\"x\"]\n[[route]]\ncontroller = \"x.wasm\"\nfilters = [\"o\"]\n",
        1,
        &["`filters.o`", "unknown field `alow`"],
    )
    .await?;
    check_fails_with(
        "[[route]]\ncontroller = \"x.wasm\"\nfilters = [\"nope\"]\n",
        3,
        &["unknown filter `nope`"],
    )
    .await
}

#[tokio::test]
async fn missing_secrets_and_keys_are_named() -> Result<()> {
    check_fails_with(
        "[[filter]]\nkind = \"bearer\"\nalgorithm = \"HS256\"\nsecret-env = \"WSHOST_SURELY_UNSET_VARIABLE\"\n[[route]]\ncontroller = \"x.wasm\"\n",
        1,
        &["`filter[0]`", "`WSHOST_SURELY_UNSET_VARIABLE` is not set"],
    )
    .await?;
    check_fails_with(
        "[[route]]\ncontroller = \"x.wasm\"\nfilters = [{ kind = \"bearer\", algorithm = \"RS256\", public-key-file = \"nope.pem\" }]\n",
        3,
        &["`public-key-file`", "nope.pem"],
    )
    .await
}

#[tokio::test]
async fn bad_limits_name_file_line_and_key() -> Result<()> {
    for (text, line, key) in [
        (
            "[limits]\nslow-client = \"maybe\"\n[[route]]\ncontroller = \"x.wasm\"\n",
            2,
            "slow-client",
        ),
        (
            "[[route]]\ncontroller = \"x.wasm\"\nlimits = { call-deadline-ms = 0 }\n",
            3,
            "call-deadline-ms",
        ),
        (
            "[[route]]\ncontroller = \"x.wasm\"\nlimits = { max-mesage-bytes = 10 }\n",
            3,
            "max-mesage-bytes",
        ),
    ] {
        let dir = RoutesDir::new(text)?;
        let stderr = failure(&check(&dir.routes()).await?);
        let at = format!("{}:{line}:", dir.routes().display());
        assert!(stderr.contains(&at), "expected {at:?} in:\n{stderr}");
        assert!(stderr.contains(key), "expected {key} in:\n{stderr}");
    }
    Ok(())
}
