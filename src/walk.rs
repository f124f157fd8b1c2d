//! Walking tenants one by one: the loop that migrations, master rollouts
//! and anything later that visits every tenant share. At most
//! `concurrency` tenants are in work at once; each tenant's outcome is a
//! value handed to the caller as it finishes, so one tenant's failure
//! never stops the others. The caller keeps its own ledger (which
//! tenants are done), which is what makes its runs resumable.

use std::future::Future;

use futures::StreamExt;

/// Runs `work` for each of `targets`, at most `concurrency` (at least one)
/// at a time, calling `done` with each outcome as it finishes.
pub async fn each_tenant<T, O, F>(
    targets: impl IntoIterator<Item = T>,
    concurrency: usize,
    work: impl Fn(T) -> F,
    mut done: impl FnMut(O),
) where
    F: Future<Output = O>,
{
    let mut outcomes = futures::stream::iter(targets)
        .map(work)
        .buffer_unordered(concurrency.max(1));
    while let Some(outcome) = outcomes.next().await {
        done(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn no_more_than_the_concurrency_run_at_once_and_every_outcome_arrives() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let mut seen = Vec::new();
        each_tenant(
            0..20,
            3,
            |i| {
                let (running, most) = (&running, &most);
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    if i % 7 == 0 {
                        Err(i)
                    } else {
                        Ok(i)
                    }
                }
            },
            |outcome: Result<i32, i32>| seen.push(outcome),
        )
        .await;
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(seen.len(), 20);
        assert_eq!(seen.iter().filter(|o| o.is_err()).count(), 3);
    }
}
