//! The docs stay honest: every routes.toml key the parser accepts is documented in
//! `docs/reference/routes-toml.md`, and every relative link in `README.md` and `docs/`
//! points at a file that exists, and the guides show the files `wshost new` writes.

use std::path::{Path, PathBuf};

use crate::harness::workspace_root;

#[test]
fn every_routes_toml_key_is_documented() {
    let page = workspace_root().join("docs/reference/routes-toml.md");
    let text = std::fs::read_to_string(&page).expect("docs/reference/routes-toml.md");
    let mut missing = Vec::new();
    for (table, keys) in wshost::config::keys() {
        // A filter kind's table is labelled `kind = "NAME"`: its heading names it.
        if let Some(kind) = table.strip_prefix("kind = ") {
            let heading = format!("### `kind = {kind}`");
            if !text.contains(&heading) {
                missing.push(heading);
            }
        }
        for key in keys {
            if !text.contains(&format!("`{key}`")) {
                missing.push(format!("{table}: `{key}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes.toml keys the code accepts but {} does not document:\n{}",
        page.display(),
        missing.join("\n")
    );
}

#[test]
fn relative_links_point_at_files() {
    let root = workspace_root();
    let mut pages = vec![root.join("README.md")];
    markdown_under(&root.join("docs"), &mut pages);
    assert!(pages.len() > 1, "no pages under docs/");
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("a Markdown page");
        for target in link_targets(&text) {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = page.parent().expect("a page's directory").join(path);
            if !resolved.exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

fn markdown_under(dir: &Path, pages: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("docs/ exists") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            markdown_under(&path, pages);
        } else if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
}

/// Targets of inline links and images, `[text](target)`, and of link definitions,
/// `[label]: target`, outside code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_code_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        // Link definitions.
        if let Some(rest) = line.strip_prefix('[')
            && let Some((_, target)) = rest.split_once("]: ")
        {
            targets.push(
                target
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
            continue;
        }
        // Inline links, skipping code spans (odd-numbered pieces between backticks).
        for (i, piece) in line.split('`').enumerate() {
            if i % 2 == 1 {
                continue;
            }
            let mut rest = piece;
            while let Some(start) = rest.find("](") {
                let after = &rest[start + 2..];
                let end = after.find(')').unwrap_or(after.len());
                let target = after[..end].split_whitespace().next().unwrap_or_default();
                targets.push(target.to_owned());
                rest = &after[end..];
            }
        }
    }
    targets
}

/// The guides show the files `wshost new` writes, as it writes them.
#[tokio::test]
async fn the_guides_show_the_files_wshost_new_writes() -> anyhow::Result<()> {
    for (lang, guide, files) in [
        ("rust", "docs/guides/rust.md", ["src/lib.rs", "routes.toml"]),
        (
            "js",
            "docs/guides/javascript.md",
            ["my-ctl.js", "routes.toml"],
        ),
        ("python", "docs/guides/python.md", ["app.py", "routes.toml"]),
    ] {
        let dir = tempfile::tempdir()?;
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshost"))
            .args(["new", lang, "my-ctl"])
            .current_dir(dir.path())
            .output()
            .await?;
        anyhow::ensure!(output.status.success(), "{output:?}");
        let page = std::fs::read_to_string(workspace_root().join(guide))?;
        let blocks = code_blocks(&page);
        for file in files {
            let written = std::fs::read_to_string(dir.path().join("my-ctl").join(file))?;
            assert!(
                blocks.iter().any(|b| b.trim_end() == written.trim_end()),
                "{guide} does not show {file} as `wshost new {lang} my-ctl` writes it"
            );
        }
    }
    Ok(())
}

/// The contents of the fenced code blocks of a Markdown page.
fn code_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.starts_with("```")) {
            (None, true) => current = Some(String::new()),
            (Some(_), true) => blocks.extend(current.take()),
            (Some(block), false) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, false) => {}
        }
    }
    blocks
}
