//! The ticker controller: lifecycle hooks and timers. While anyone is connected, a
//! repeating timer pushes `tick N` to every client; the timer starts on the first open
//! and stops on the last close. `init` reads `interval-ms` from the route's
//! `[route.config]`; `on-shutdown` says goodbye; the tick count survives hot reloads
//! through `snapshot`/`restore`.

use std::cell::RefCell;
use std::time::Duration;

use wshost_guest::{
    Connection, Controller, Lifecycle, LogLevel, ServerParams, Timer, broadcast_text, connections,
    log, set_timer,
};

struct Ticker;

struct State {
    interval: Duration,
    timer: Option<Timer>,
    ticks: u64,
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State { interval: Duration::from_secs(1), timer: None, ticks: 0 })
    };
}

fn start() {
    STATE.with_borrow_mut(|s| {
        if s.timer.is_none() {
            // Fails only past routes.toml `max-timers`; without a timer there are no ticks.
            s.timer = set_timer(s.interval, true)
                .inspect_err(|why| log(LogLevel::Error, &format!("no ticks: {why}")))
                .ok();
        }
    });
}

impl Controller for Ticker {
    fn on_open(conn: Connection) {
        let ticks = STATE.with_borrow(|s| s.ticks);
        let _ = conn.send_text(&format!("welcome; {ticks} ticks so far"));
    }
}

impl Lifecycle for Ticker {
    fn init(config: Vec<(String, String)>, _params: ServerParams) -> Result<(), String> {
        if let Some((_, ms)) = config.iter().find(|(k, _)| k == "interval-ms") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| format!("interval-ms `{ms}` is not a number"))?;
            STATE.with_borrow_mut(|s| s.interval = Duration::from_millis(ms.max(1)));
        }
        // A new instance (after a reload or a trap) starts without timers; if clients are
        // already connected, keep ticking for them.
        if !connections().is_empty() {
            start();
        }
        Ok(())
    }

    fn on_first_open(_conn: Connection) {
        start();
    }

    fn on_last_close(_conn: Connection) {
        if let Some(timer) = STATE.with_borrow_mut(|s| s.timer.take()) {
            timer.cancel();
        }
    }

    fn on_timer(_timer: Timer) {
        let ticks = STATE.with_borrow_mut(|s| {
            s.ticks += 1;
            s.ticks
        });
        broadcast_text(&format!("tick {ticks}"), None);
    }

    fn on_shutdown() {
        broadcast_text("ticker stopping: server shutdown", None);
    }

    fn snapshot() -> Vec<u8> {
        STATE.with_borrow(|s| s.ticks.to_le_bytes().to_vec())
    }

    fn restore(state: Vec<u8>) -> Result<(), String> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| "expected 8 bytes of tick count".to_owned())?;
        STATE.with_borrow_mut(|s| s.ticks = u64::from_le_bytes(bytes));
        Ok(())
    }
}

wshost_guest::export!(Ticker, lifecycle);
