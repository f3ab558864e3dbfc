//! Optional deadlines in `select!` loops: a branch that sleeps until the deadline, or
//! forever when there is none (the branch is then also disabled by its guard).

use tokio::time::Instant;

/// Completes at `deadline`; never completes for `None`.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
