//! Building the guest controllers once per test process: the examples (echo, chat, auth,
//! ticker) and the test-only probe, hostile, old-wit, pinned-wit and lifecycle
//! controllers, the latter in four builds (v1, v2, bad-init, trap-init) kept side by side
//! for the hot-reload tests; and the table bomb, assembled from WAT.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, ensure};

use super::{Route, routes_toml, workspace_root};

/// The compiled guest controllers (components), built once per test process.
#[derive(Debug)]
pub(crate) struct Guests {
    /// examples/echo.
    pub(crate) echo: PathBuf,
    /// examples/chat.
    pub(crate) chat: PathBuf,
    /// examples/test-controllers/probe.
    pub(crate) probe: PathBuf,
    /// The probe built with feature `hook`: also exports the handshake hook.
    pub(crate) probe_hook: PathBuf,
    /// examples/auth (exports the handshake hook).
    pub(crate) auth: PathBuf,
    /// examples/ticker (lifecycle + timers).
    pub(crate) ticker: PathBuf,
    /// examples/test-controllers/hostile: spins, grows, panics, floods on request.
    pub(crate) hostile: PathBuf,
    /// examples/test-controllers/table-bomb: grows a table by 2×32M elements per message.
    pub(crate) table_bomb: PathBuf,
    /// examples/test-controllers/gc-bomb: allocates 1 GiB of wasm GC arrays per message.
    pub(crate) gc_bomb: PathBuf,
    /// examples/test-controllers/old-wit: built against `wshost:controller@0.1.0`, with a
    /// handshake hook that refuses everyone.
    pub(crate) old_wit: PathBuf,
    /// examples/test-controllers/pinned-wit: built against the WIT as it was before
    /// topics (`controller-full`, echo `pinned:...`, a timer, a handshake hook).
    pub(crate) pinned_wit: PathBuf,
    /// examples/test-controllers/lifecycle, default build: replies `v1:...`.
    pub(crate) lifecycle_v1: PathBuf,
    /// The same built with feature `v2`: replies `v2:...`.
    pub(crate) lifecycle_v2: PathBuf,
    /// The same built with feature `bad-init`: `init` refuses to start.
    pub(crate) lifecycle_bad_init: PathBuf,
    /// The same built with feature `trap-init`: `init` panics.
    pub(crate) lifecycle_trap_init: PathBuf,
}

/// Builds echo, chat and probe for wasm32-wasip2 (once; later calls return the same paths).
///
/// The build uses the workspace's own target directory (`CARGO_TARGET_DIR` or
/// `<root>/target`): the outer `cargo test` only holds the lock of the host profile's
/// directory, and the guests live under `wasm32-wasip2/release`, so the nested build does
/// not wait on it.
pub(crate) fn guests() -> &'static Guests {
    static GUESTS: OnceLock<Result<Guests, String>> = OnceLock::new();
    match GUESTS.get_or_init(|| build_guests().map_err(|e| format!("{e:#}"))) {
        Ok(guests) => guests,
        Err(e) => panic!("building the guest controllers failed: {e}"),
    }
}

fn cargo_build(target_dir: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    ensure!(
        output.status.success(),
        "cargo build {args:?} of the guests failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn build_guests() -> Result<Guests> {
    let root = workspace_root();
    let target_dir = super::target_dir();
    let dir = target_dir.join("wasm32-wasip2").join("release");
    let variants = dir.join("test-variants");
    std::fs::create_dir_all(&variants).context("creating the variants directory")?;
    cargo_build(
        &target_dir,
        &[
            "-p",
            "echo",
            "-p",
            "chat",
            "-p",
            "probe",
            "-p",
            "auth",
            "-p",
            "ticker",
            "-p",
            "hostile",
            "-p",
            "old-wit",
            "-p",
            "pinned-wit",
        ],
    )?;
    cargo_build(&target_dir, &["-p", "probe", "--features", "hook"])?;
    let probe_hook = variants.join("probe-hook.wasm");
    std::fs::copy(dir.join("probe.wasm"), &probe_hook).context("copying the hook build")?;
    // The plain probe last, so that probe.wasm is the plain build again.
    cargo_build(&target_dir, &["-p", "probe"])?;
    // The lifecycle controller in three builds; each is copied out before the next one
    // overwrites lifecycle.wasm.
    let mut lifecycle = Vec::new();
    for (features, name) in [
        ("", "v1"),
        ("v2", "v2"),
        ("bad-init", "bad-init"),
        ("trap-init", "trap-init"),
    ] {
        cargo_build(&target_dir, &["-p", "lifecycle", "--features", features])?;
        let copy = variants.join(format!("lifecycle-{name}.wasm"));
        std::fs::copy(dir.join("lifecycle.wasm"), &copy)
            .with_context(|| format!("copying the {name} build"))?;
        lifecycle.push(copy);
    }
    let [
        lifecycle_v1,
        lifecycle_v2,
        lifecycle_bad_init,
        lifecycle_trap_init,
    ] = <[PathBuf; 4]>::try_from(lifecycle).expect("four builds");
    let table_bomb = variants.join("table-bomb.wasm");
    let wat = root.join("examples/test-controllers/table-bomb/table-bomb.wat");
    let bytes = wat::parse_file(&wat).with_context(|| format!("assembling {}", wat.display()))?;
    std::fs::write(&table_bomb, bytes).context("writing table-bomb.wasm")?;
    let gc_bomb = variants.join("gc-bomb.wasm");
    let wat = root.join("examples/test-controllers/gc-bomb/gc-bomb.wat");
    let bytes = wat::parse_file(&wat).with_context(|| format!("assembling {}", wat.display()))?;
    std::fs::write(&gc_bomb, bytes).context("writing gc-bomb.wasm")?;
    let guests = Guests {
        echo: dir.join("echo.wasm"),
        chat: dir.join("chat.wasm"),
        probe: dir.join("probe.wasm"),
        probe_hook,
        auth: dir.join("auth.wasm"),
        ticker: dir.join("ticker.wasm"),
        hostile: dir.join("hostile.wasm"),
        table_bomb,
        gc_bomb,
        old_wit: dir.join("old_wit.wasm"),
        pinned_wit: dir.join("pinned_wit.wasm"),
        lifecycle_v1,
        lifecycle_v2,
        lifecycle_bad_init,
        lifecycle_trap_init,
    };
    for path in [
        &guests.echo,
        &guests.chat,
        &guests.probe,
        &guests.auth,
        &guests.ticker,
        &guests.hostile,
        &guests.old_wit,
        &guests.pinned_wit,
    ] {
        ensure!(
            path.is_file(),
            "the guest build did not produce {}",
            path.display()
        );
    }
    Ok(guests)
}

/// A language the chat example is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    /// examples/chat, through the guest SDK.
    Rust,
    /// examples/chat-js, componentize-js.
    JavaScript,
    /// examples/chat-py, componentize-py.
    Python,
}

/// The chat controller written in `lang`, built once per test process.
///
/// JavaScript and Python are built by their `build.sh`, which installs the pinned
/// toolchain from npm / PyPI if it is missing: no toolchain, no test (it fails, it is
/// never skipped). Those components take seconds to compile, so a `wshost check` of
/// each compiles it once into wasmtime's cache, which every test server then shares.
pub(crate) fn chat(lang: Lang) -> &'static Path {
    static BUILT: [OnceLock<Result<PathBuf, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    let (slot, example, file) = match lang {
        Lang::Rust => return &guests().chat,
        Lang::JavaScript => (&BUILT[0], "chat-js", "chat-js.wasm"),
        Lang::Python => (&BUILT[1], "chat-py", "chat-py.wasm"),
    };
    let built = slot.get_or_init(|| build_chat(example, file).map_err(|e| format!("{e:#}")));
    match built {
        Ok(path) => path,
        Err(e) => panic!("building the {lang:?} chat controller failed: {e}"),
    }
}

fn build_chat(example: &str, file: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let script = root.join("examples").join(example).join("build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        output.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let target_dir = super::target_dir();
    let wasm = target_dir.join("wasm32-wasip2").join("release").join(file);
    ensure!(
        wasm.is_file(),
        "{} did not produce {}",
        script.display(),
        wasm.display()
    );

    // Compile it into the shared cache now, once, rather than in every test's server.
    let dir = tempfile::tempdir()?;
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, routes_toml(&[Route::to(&wasm)]))?;
    let output = Command::new(env!("CARGO_BIN_EXE_wshost"))
        .arg("check")
        .arg(&routes)
        .stdin(Stdio::null())
        .output()
        .context("running wshost check")?;
    ensure!(
        output.status.success(),
        "wshost check of {} failed:\n{}",
        wasm.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(wasm)
}
