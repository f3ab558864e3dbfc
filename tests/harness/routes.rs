//! Writing routes.toml files: route tables built in tests, in fresh temporary directories.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::TempDir;

/// Quotes `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `[[route]]` table of a routes.toml, built in a test.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    name: Option<String>,
    glob: Option<String>,
    protocols: Vec<String>,
    controller: String,
    limits: Option<String>,
    filters: Option<String>,
    topic: Option<String>,
}

impl Route {
    /// A route (matching every path until [`Route::at`] is called) served by the
    /// component at `wasm` (an absolute path).
    pub(crate) fn to(wasm: &Path) -> Self {
        Self::to_controller(&wasm.display().to_string())
    }

    /// A route served by `controller`: a `[controllers.NAME]` name or a path.
    pub(crate) fn to_controller(controller: &str) -> Self {
        Self {
            name: None,
            glob: None,
            protocols: Vec::new(),
            controller: controller.to_owned(),
            limits: None,
            filters: None,
            topic: None,
        }
    }

    /// Sets `match`.
    pub(crate) fn at(mut self, glob: &str) -> Self {
        self.glob = Some(glob.to_owned());
        self
    }

    /// Sets `name`.
    pub(crate) fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Sets `protocols`.
    pub(crate) fn protocols(mut self, protocols: &[&str]) -> Self {
        self.protocols = protocols.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// Sets the route's `limits` to the inline table with these keys, e.g.
    /// `"max-message-bytes = 1024, call-deadline-ms = 300"`.
    pub(crate) fn limits(mut self, keys: &str) -> Self {
        self.limits = Some(keys.to_owned());
        self
    }

    /// Sets the route's `filters` to the array with these items, e.g.
    /// `"{ kind = \"deny\" }"`.
    pub(crate) fn filters(mut self, items: &str) -> Self {
        self.filters = Some(items.to_owned());
        self
    }

    /// Sets `topic`, e.g. `"room/{1}"`: the route's connections are subscribed to it.
    pub(crate) fn topic(mut self, topic: &str) -> Self {
        self.topic = Some(topic.to_owned());
        self
    }

    fn to_toml(&self) -> String {
        let mut out = String::from("[[route]]\n");
        if let Some(name) = &self.name {
            out += &format!("name = {}\n", toml_string(name));
        }
        if let Some(glob) = &self.glob {
            out += &format!("match = {}\n", toml_string(glob));
        }
        if !self.protocols.is_empty() {
            let list: Vec<String> = self.protocols.iter().map(|p| toml_string(p)).collect();
            out += &format!("protocols = [{}]\n", list.join(", "));
        }
        if let Some(filters) = &self.filters {
            out += &format!("filters = [{filters}]\n");
        }
        out += &format!("controller = {}\n", toml_string(&self.controller));
        if let Some(topic) = &self.topic {
            out += &format!("topic = {}\n", toml_string(topic));
        }
        if let Some(limits) = &self.limits {
            out += &format!("limits = {{ {limits} }}\n");
        }
        out
    }
}

/// The text of a routes.toml holding `routes`, in order.
pub(crate) fn routes_toml(routes: &[Route]) -> String {
    routes
        .iter()
        .map(Route::to_toml)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `[controllers.NAME]` table naming the component at `wasm`.
pub(crate) fn controller_toml(name: &str, wasm: &Path) -> String {
    format!(
        "[controllers.{name}]\nwasm = {}\n",
        toml_string(&wasm.display().to_string())
    )
}

/// A fresh temporary directory holding a routes.toml (and whatever else a test puts there).
#[derive(Debug)]
pub(crate) struct RoutesDir {
    dir: TempDir,
}

impl RoutesDir {
    /// Creates the directory and writes `routes` to `routes.toml` in it.
    pub(crate) fn new(routes: &str) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let this = Self { dir };
        this.write("routes.toml", routes.as_bytes())?;
        Ok(this)
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The routes.toml file.
    pub(crate) fn routes(&self) -> PathBuf {
        self.dir.path().join("routes.toml")
    }

    /// Writes another file beside routes.toml and returns its path.
    pub(crate) fn write(&self, name: &str, contents: &[u8]) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}
