//! Spawning the engine's tasks in a [`Scope`] that can be ended at once.
//!
//! Every task the engine, its links and its transports start goes through
//! [`spawn`]. Outside a scope that is `tokio::spawn`. Inside one (entered
//! with [`Scope::enter`]), the task joins the scope, and so does every task
//! it spawns in turn; [`Scope::end`] aborts them all. That is how the
//! simulator crashes a node in the middle of anything: it ends the node's
//! scope, which drops every future the node was running at its current
//! await point, and starts a new node on the same home.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::{AbortHandle, JoinHandle};

/// Lock a mutex, recovering the data if a panicking thread poisoned it
/// (every critical section of pigeon leaves the data consistent). Here, at
/// the bottom of the layers, so that transports and crypto need not reach
/// up into the engine for it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// A set of tasks that end together.
#[derive(Clone, Default)]
pub struct Scope {
    tasks: Arc<Mutex<Tasks>>,
}

#[derive(Default)]
struct Tasks {
    running: Vec<AbortHandle>,
    /// Finished handles are dropped when the list doubles past this.
    prune_at: usize,
    ended: bool,
}

impl Scope {
    pub fn new() -> Scope {
        Scope::default()
    }

    /// Run `fut` inside the scope: what it spawns belongs to the scope.
    pub async fn enter<F: Future>(&self, fut: F) -> F::Output {
        SCOPE.scope(self.clone(), fut).await
    }

    /// Abort every task of the scope; any spawned later is aborted at once.
    pub fn end(&self) {
        let mut tasks = lock(&self.tasks);
        tasks.ended = true;
        for task in tasks.running.drain(..) {
            task.abort();
        }
    }

    /// Tasks of the scope that have not finished.
    pub fn live(&self) -> usize {
        let tasks = lock(&self.tasks);
        tasks.running.iter().filter(|t| !t.is_finished()).count()
    }

    fn adopt(&self, task: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        if tasks.ended {
            task.abort();
            return;
        }
        tasks.running.push(task);
        if tasks.running.len() > tasks.prune_at.max(64) {
            tasks.running.retain(|t| !t.is_finished());
            tasks.prune_at = tasks.running.len() * 2;
        }
    }
}

/// Spawn `fut` on the runtime, in the current task's scope if it has one.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match SCOPE.try_with(Scope::clone) {
        Ok(scope) => {
            let handle = tokio::spawn(SCOPE.scope(scope.clone(), fut));
            scope.adopt(handle.abort_handle());
            handle
        }
        Err(_) => tokio::spawn(fut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn ending_a_scope_stops_its_tasks_and_their_children() {
        let scope = Scope::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        scope
            .enter(async {
                let tx = tx.clone();
                spawn(async move {
                    let child_tx = tx.clone();
                    spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let _ = child_tx.send("child");
                        }
                    });
                    std::future::pending::<()>().await;
                });
            })
            .await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(rx.try_recv().ok(), Some("child"));
        assert_eq!(scope.live(), 2);
        scope.end();
        tokio::time::sleep(Duration::from_millis(1)).await;
        while rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(rx.try_recv().is_err(), "a task of an ended scope still ran");
        assert_eq!(scope.live(), 0);
        // Outside any scope, spawn is tokio's.
        let outside = spawn(async { 7 });
        assert_eq!(outside.await.ok(), Some(7));
        drop(tx);
    }
}
