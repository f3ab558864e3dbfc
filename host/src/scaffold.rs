//! `wshost new LANG NAME`: writes a ready-to-run controller project into `NAME/`, in
//! Rust, JavaScript or Python: the source with every event stubbed and commented, its
//! build step (the same pinned toolchains as the examples), a routes.toml whose `build`
//! and `watch` make `wshost run --watch NAME/routes.toml` the development loop, the WIT,
//! and a short README.
//!
//! Everything is embedded in the binary, so a project can be made anywhere, offline.
//! The Rust SDK is not on crates.io, so a Rust project gets a copy of the one this
//! wshost was built with (`wshost-guest/`, a path dependency), matching its WIT.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The WIT every project is built against.
const WIT: &str = include_str!("../../wit/controller.wit");
/// The Rust SDK's source, vendored into Rust projects.
const SDK_LIB: &str = include_str!("../../guest-sdk/src/lib.rs");
const SDK_MANIFEST: &str = include_str!("../../guest-sdk/Cargo.toml");
/// The JavaScript and Python toolchain pins the examples are built with.
const JS_PACKAGE: &str = include_str!("../../examples/chat-js/package.json");
const JS_LOCK: &str = include_str!("../../examples/chat-js/package-lock.json");
const PY_REQUIREMENTS: &str = include_str!("../../examples/chat-py/requirements.txt");

/// The language of a new project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// Rust, through the wshost-guest SDK.
    Rust,
    /// JavaScript, through componentize-js.
    Js,
    /// Python, through componentize-py.
    Python,
}

/// What to put into the project.
pub(crate) struct Options {
    /// The language.
    pub(crate) lang: Lang,
    /// The project's name: its directory, crate or file name, and controller name.
    pub(crate) name: String,
    /// Where to create the project directory.
    pub(crate) parent: PathBuf,
    /// Also stub the optional hooks (world `controller-full`): the handshake check,
    /// lifecycle, timers and state handoff.
    pub(crate) hooks: bool,
}

/// Writes the project; returns its directory.
pub(crate) fn create(options: &Options) -> anyhow::Result<PathBuf> {
    let name = &options.name;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "`{name}` is not a usable project name: use lower-case letters, digits and `-`, starting with a letter"
        );
    }
    let dir = options.parent.join(name);
    if dir.exists() && dir.read_dir().map_or(true, |mut d| d.next().is_some()) {
        bail!("`{}` already exists and is not empty", dir.display());
    }
    let world = if options.hooks {
        "controller-full"
    } else {
        "controller"
    };
    let vars = Vars {
        name: name.clone(),
        crate_name: name.replace('-', "_"),
        type_name: camel_case(name),
        world: world.to_owned(),
        wit_version: wit_version()?,
        sdk_version: manifest_version(SDK_MANIFEST)?,
    };
    let files = match options.lang {
        Lang::Rust => rust_files(options.hooks),
        Lang::Js => js_files(name, options.hooks),
        Lang::Python => python_files(options.hooks),
    };
    write(&dir, "wit/controller.wit", WIT)?;
    for (path, template) in files {
        write(&dir, &vars.fill(&path), &vars.fill(&template))?;
    }
    Ok(dir)
}

/// The words a template may name as `{{word}}`.
struct Vars {
    name: String,
    crate_name: String,
    type_name: String,
    world: String,
    wit_version: String,
    sdk_version: String,
}

impl Vars {
    fn fill(&self, template: &str) -> String {
        template
            .replace("{{name}}", &self.name)
            .replace("{{crate}}", &self.crate_name)
            .replace("{{type}}", &self.type_name)
            .replace("{{world}}", &self.world)
            .replace("{{wit_version}}", &self.wit_version)
            .replace("{{sdk_version}}", &self.sdk_version)
    }
}

fn rust_files(hooks: bool) -> Vec<(String, String)> {
    let lib = if hooks {
        include_str!("../templates/rust/lib_hooks.rs")
    } else {
        include_str!("../templates/rust/lib.rs")
    };
    [
        ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
        (
            "rust-toolchain.toml",
            include_str!("../templates/rust/rust-toolchain.toml"),
        ),
        ("src/lib.rs", lib),
        ("routes.toml", include_str!("../templates/rust/routes.toml")),
        ("README.md", include_str!("../templates/rust/README.md")),
        (
            "wshost-guest/Cargo.toml",
            include_str!("../templates/rust/sdk-Cargo.toml"),
        ),
        ("wshost-guest/src/lib.rs", SDK_LIB),
        (".gitignore", "/target\n"),
    ]
    .into_iter()
    .map(|(path, text)| (path.to_owned(), text.to_owned()))
    .collect()
}

fn js_files(name: &str, hooks: bool) -> Vec<(String, String)> {
    let source = if hooks {
        include_str!("../templates/js/controller_hooks.js")
    } else {
        include_str!("../templates/js/controller.js")
    };
    // The examples' pins, under the project's own package name.
    let rename = |text: &str| text.replace("\"wshost-chat-js\"", "\"wshost-controller\"");
    let package = rename(JS_PACKAGE)
        .lines()
        .filter(|line| !line.trim_start().starts_with("\"description\""))
        .collect::<Vec<_>>()
        .join("\n");
    vec![
        (format!("{name}.js"), source.to_owned()),
        (
            "build.mjs".to_owned(),
            include_str!("../templates/js/build.mjs").to_owned(),
        ),
        (
            "build.sh".to_owned(),
            include_str!("../templates/js/build.sh").to_owned(),
        ),
        ("package.json".to_owned(), package + "\n"),
        ("package-lock.json".to_owned(), rename(JS_LOCK)),
        (
            "routes.toml".to_owned(),
            include_str!("../templates/js/routes.toml").to_owned(),
        ),
        (
            "README.md".to_owned(),
            include_str!("../templates/js/README.md").to_owned(),
        ),
        (
            ".gitignore".to_owned(),
            "/node_modules\n/build\n".to_owned(),
        ),
    ]
}

fn python_files(hooks: bool) -> Vec<(String, String)> {
    let app = if hooks {
        include_str!("../templates/python/app_hooks.py")
    } else {
        include_str!("../templates/python/app.py")
    };
    let pins: Vec<&str> = PY_REQUIREMENTS
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .collect();
    let requirements = format!(
        "# The build toolchain, installed by build.sh into .venv (never needed to run wshost).\n{}\n",
        pins.join("\n")
    );
    [
        ("app.py", app),
        ("build.sh", include_str!("../templates/python/build.sh")),
        (
            "routes.toml",
            include_str!("../templates/python/routes.toml"),
        ),
        ("README.md", include_str!("../templates/python/README.md")),
        (".gitignore", "/.venv\n/build\n__pycache__/\n"),
    ]
    .into_iter()
    .map(|(path, text)| (path.to_owned(), text.to_owned()))
    .chain([("requirements.txt".to_owned(), requirements)])
    .collect()
}

fn write(dir: &Path, relative: &str, contents: &str) -> anyhow::Result<()> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create `{}`", parent.display()))?;
    }
    std::fs::write(&path, contents).with_context(|| format!("cannot write `{}`", path.display()))
}

/// `my-ctl` → `MyCtl`.
fn camel_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The version in the WIT's `package wshost:controller@VERSION;` line.
fn wit_version() -> anyhow::Result<String> {
    WIT.lines()
        .find_map(|line| line.strip_prefix("package wshost:controller@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .map(str::to_owned)
        .context("the embedded WIT has no `package wshost:controller@VERSION;` line")
}

/// The `version = "..."` of a Cargo manifest.
fn manifest_version(manifest: &str) -> anyhow::Result<String> {
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .context("the embedded SDK manifest has no version")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_types_and_crates() {
        assert_eq!(camel_case("my-ctl2"), "MyCtl2");
        assert_eq!(wit_version().unwrap().split('.').count(), 3);
        assert_eq!(manifest_version(SDK_MANIFEST).unwrap(), "0.1.0");
    }
}
