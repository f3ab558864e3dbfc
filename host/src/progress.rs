//! On a terminal, a spinner for each controller being compiled, with its name, size and
//! elapsed time: the first compile of a JavaScript or Python component takes seconds.
//! Drawn from the library's [`wshost::PROGRESS`] log events, which are also written as
//! plain log lines (the only output when stderr is not a terminal).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// The tracing layer that keeps one spinner per controller being compiled.
#[derive(Default)]
pub(crate) struct Spinners {
    running: Mutex<HashMap<String, ProgressBar>>,
}

/// The fields of a progress event this layer reads.
#[derive(Default)]
struct Fields {
    message: String,
    controller: String,
    bytes: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "controller" {
            value.clone_into(&mut self.controller);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "bytes" {
            self.bytes = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "controller" => self.controller = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Spinners {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        if event.metadata().target() != wshost::PROGRESS {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match fields.message.as_str() {
            "compiling" => {
                let size = fields
                    .bytes
                    .map_or_else(String::new, |b| format!(" ({:.1} MB)", b as f64 / 1e6));
                let spinner = ProgressBar::new_spinner()
                    .with_style(
                        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    )
                    .with_message(format!("compiling {}{size}", fields.controller));
                spinner.enable_steady_tick(Duration::from_millis(120));
                running.insert(fields.controller, spinner);
            }
            "compiled" => {
                if let Some(spinner) = running.remove(&fields.controller) {
                    spinner.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}
