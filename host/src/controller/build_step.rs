//! Runs a controller's `build` command before it is loaded, the way `spin build` does.
//!
//! The command runs with `sh -c` in the routes file's directory, every time wshost
//! starts (or checks): freshness is the build tool's job, and cargo, make and friends
//! answer "nothing to do" in a fraction of a second. Its output goes to wshost's stderr,
//! never to stdout, which carries only the "listening" line.

use std::process::Stdio;

use crate::config::BuildCommand;

/// A build command that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `sh` could not be started.
    #[error("controller `{name}`: cannot run build command `{command}`: {source}")]
    Spawn {
        /// Controller name.
        name: String,
        /// The command line.
        command: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The command exited unsuccessfully.
    #[error(
        "controller `{name}`: build command `{command}` failed ({status}); its output is above"
    )]
    Failed {
        /// Controller name.
        name: String,
        /// The command line.
        command: String,
        /// Exit status.
        status: std::process::ExitStatus,
    },
}

/// Runs `build` for controller `name` and waits for it.
pub(crate) async fn run(name: &str, build: &BuildCommand) -> Result<(), BuildError> {
    tracing::info!(target: crate::PROGRESS, controller = name, command = %build.command, "building controller");
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&build.command)
        .current_dir(&build.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|source| BuildError::Spawn {
            name: name.to_owned(),
            command: build.command.clone(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            name: name.to_owned(),
            command: build.command.clone(),
            status,
        })
    }
}
