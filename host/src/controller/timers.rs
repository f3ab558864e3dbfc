//! The pending timers of one controller instance, capped at the controller's
//! `max-timers`.
//!
//! The actor asks for the next due time before every event and takes the due timers when
//! it comes, so both must stay cheap however many timers a guest sets: timers are kept
//! by id (for `cancel-timer`) and in a set ordered by due time, which makes
//! [`Timers::next_due`] O(log n), setting or cancelling one O(log n), and taking `k` due
//! timers O(k log n).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

/// Pending timers of one instance.
#[derive(Debug)]
pub(crate) struct Timers {
    /// The most pending timers at once.
    cap: usize,
    next_id: u64,
    by_id: BTreeMap<u64, Timer>,
    /// `(due, id)` of every pending timer; the same timers as `by_id`.
    queue: BTreeSet<(Instant, u64)>,
}

#[derive(Debug)]
struct Timer {
    due: Instant,
    period: Option<Duration>,
}

/// `set-timer` past the cap.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("this instance already has {0} pending timers, its `max-timers` limit")]
pub(crate) struct TooManyTimers(pub(crate) usize);

impl Timers {
    /// No timers; at most `cap` pending at once.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            next_id: 0,
            by_id: BTreeMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Starts a timer due `delay` after `now`, repeating every `delay` (at least 1 ms)
    /// if `repeat`; returns its id.
    pub(crate) fn set(
        &mut self,
        now: Instant,
        delay: Duration,
        repeat: bool,
    ) -> Result<u64, TooManyTimers> {
        if self.by_id.len() >= self.cap {
            return Err(TooManyTimers(self.cap));
        }
        self.next_id += 1;
        let id = self.next_id;
        let due = now + delay;
        let period = repeat.then(|| delay.max(Duration::from_millis(1)));
        self.by_id.insert(id, Timer { due, period });
        self.queue.insert((due, id));
        Ok(id)
    }

    /// Stops a timer; returns whether it was pending.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        match self.by_id.remove(&id) {
            Some(timer) => {
                self.queue.remove(&(timer.due, id));
                true
            }
            None => false,
        }
    }

    /// When the earliest timer is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.queue.first().map(|(due, _)| *due)
    }

    /// Takes the ids of the timers due at `now`, in due order (each at most once),
    /// rescheduling the repeating ones (from `now` if they fell behind, so a slow guest
    /// is not flooded).
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<u64> {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            due.push(id);
        }
        for &id in &due {
            let timer = self.by_id.get_mut(&id).expect("queued timers are pending");
            match timer.period {
                Some(period) => {
                    timer.due = (timer.due + period).max(now);
                    self.queue.insert((timer.due, id));
                }
                None => {
                    self.by_id.remove(&id);
                }
            }
        }
        due
    }

    /// How many timers are pending.
    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.by_id.len(), self.queue.len());
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_shot_and_repeating_timers() {
        let mut timers = Timers::new(10);
        let t0 = Instant::now();
        let once = timers.set(t0, ms(10), false).unwrap();
        let every = timers.set(t0, ms(5), true).unwrap();
        assert_eq!(timers.next_due(), Some(t0 + ms(5)));
        assert_eq!(timers.take_due(t0), Vec::<u64>::new());
        assert_eq!(timers.take_due(t0 + ms(5)), [every]);
        assert_eq!(timers.take_due(t0 + ms(10)), [once, every]);
        assert!(timers.cancel(every));
        assert!(!timers.cancel(once), "a fired one-shot timer is gone");
        assert_eq!(timers.next_due(), None);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn due_timers_come_in_due_order_then_id_order() {
        let mut timers = Timers::new(10);
        let t0 = Instant::now();
        let late = timers.set(t0, ms(30), false).unwrap();
        let early = timers.set(t0, ms(10), false).unwrap();
        let tie = timers.set(t0, ms(10), false).unwrap();
        assert_eq!(timers.take_due(t0 + ms(100)), [early, tie, late]);
    }

    #[test]
    fn a_repeating_timer_that_fell_behind_fires_once_and_is_rescheduled_from_now() {
        let mut timers = Timers::new(10);
        let t0 = Instant::now();
        let every = timers.set(t0, ms(1), true).unwrap();
        let now = t0 + ms(50);
        assert_eq!(timers.take_due(now), [every], "not 50 times");
        assert_eq!(timers.next_due(), Some(now));
        assert_eq!(timers.take_due(now), [every]);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn the_cap_counts_pending_timers_only() {
        let mut timers = Timers::new(2);
        let t0 = Instant::now();
        let a = timers.set(t0, ms(1), false).unwrap();
        timers.set(t0, ms(1), true).unwrap();
        assert_eq!(timers.set(t0, ms(1), false), Err(TooManyTimers(2)));
        assert!(timers.cancel(a));
        let c = timers.set(t0, ms(1), false).unwrap();
        assert_eq!(timers.set(t0, ms(1), false), Err(TooManyTimers(2)));
        // A fired one-shot timer frees its place.
        assert!(timers.take_due(t0 + ms(1)).contains(&c));
        assert!(timers.set(t0, ms(1), false).is_ok());
    }

    #[test]
    fn set_and_cancel_churn_leaves_nothing_behind() {
        let mut timers = Timers::new(10);
        let t0 = Instant::now();
        for i in 0..10_000 {
            let id = timers.set(t0, ms(i % 7), i % 2 == 0).unwrap();
            assert!(timers.cancel(id));
        }
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next_due(), None);
    }
}
