//! The on-disk cache of compiled components: a restart loads from it, and a corrupt entry
//! is ignored, recompiled and rewritten instead of failing the start.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::harness::{Route, RoutesDir, Server, guests, routes_toml};

/// Starts wshost on an echo route with its compiled-code cache in `cache`, proves it
/// echoes, and returns the `from_cache` value of its "compiled" log line.
async fn start_echo(cache: &Path) -> Result<bool> {
    let dir = RoutesDir::new(&routes_toml(&[Route::to(&guests().echo)]))?;
    let cache = cache.to_str().context("temp path is not UTF-8")?;
    let server = Server::start_in_with_env(dir, &[("WSHOST_CACHE_DIR", cache)]).await?;
    let mut client = server.connect("/echo").await?;
    assert_eq!(client.request("cached?").await?, "cached?");
    let event = server
        .log_event("compiled", |e| {
            e["message"] == "compiled" && e["from_cache"].is_boolean()
        })
        .await?;
    Ok(event["from_cache"] == true)
}

/// Every cache entry (the `.stats` bookkeeping files aside) under `dir`.
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(entries(&path)?);
        } else if path.extension().is_none_or(|ext| ext != "stats") {
            found.push(path);
        }
    }
    Ok(found)
}

#[tokio::test]
async fn a_restart_loads_from_the_cache_and_a_corrupt_entry_is_rebuilt() -> Result<()> {
    let cache = tempfile::tempdir()?;
    assert!(
        !start_echo(cache.path()).await?,
        "an empty cache cannot hit"
    );
    let written = entries(cache.path())?;
    ensure!(!written.is_empty(), "the first start wrote no cache entry");
    assert!(
        start_echo(cache.path()).await?,
        "the restart compiled again"
    );

    for path in &written {
        let bytes = std::fs::read(path)?;
        // Half an entry, then garbage: what a crash mid-write or a bad disk leaves.
        let mut corrupt = bytes[..bytes.len() / 2].to_vec();
        corrupt.extend_from_slice(b"not zstd at all");
        std::fs::write(path, corrupt)?;
    }
    assert!(
        !start_echo(cache.path()).await?,
        "a corrupt entry was used as if valid"
    );
    assert!(
        start_echo(cache.path()).await?,
        "the corrupt entry was not rewritten"
    );
    Ok(())
}
