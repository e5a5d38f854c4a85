//! Work that walks `/proc` runs off the event loop: a machine with many
//! processes, or one process with millions of mappings (anyone can make
//! one), would otherwise stall every client's round trip for as long as the
//! walk takes. One job at a time per kind; the loop looks for its result
//! every [`CHECK_INTERVAL`] while it runs.

use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::time::Duration;

/// How often the loop looks whether a job has finished.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// At most one job of one kind, running on its own thread.
pub(crate) struct Background<T> {
    name: &'static str,
    running: Option<Receiver<T>>,
}

impl<T: Send + 'static> Background<T> {
    /// `name` names the thread, for debuggers and `top -H`.
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            running: None,
        }
    }

    /// Whether a job is running.
    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts `job` on a thread of its own. Fails if the thread could not be
    /// started (out of memory, or of threads).
    pub(crate) fn start(
        &mut self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<()> {
        let (sender, receiver) = channel();
        std::thread::Builder::new()
            .name(self.name.to_owned())
            .spawn(move || {
                // The loop may have gone meanwhile; nobody then wants it.
                let _ = sender.send(job());
            })?;
        self.running = Some(receiver);
        Ok(())
    }

    /// Where the job is; a finished job's result is handed out once.
    pub(crate) fn poll(&mut self) -> Job<T> {
        let Some(receiver) = self.running.as_ref() else {
            return Job::Idle;
        };
        match receiver.try_recv() {
            Ok(result) => {
                self.running = None;
                Job::Done(result)
            }
            Err(TryRecvError::Empty) => Job::Running,
            Err(TryRecvError::Disconnected) => {
                tracing::warn!("{} ended without a result", self.name);
                self.running = None;
                Job::Died
            }
        }
    }
}

/// Where a [`Background`] job is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Job<T> {
    /// None was started, or its result was taken.
    Idle,
    Running,
    Done(T),
    /// It panicked: no result will come.
    Died,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_once_and_its_result_is_taken_once() {
        let mut background = Background::new("test-job");
        assert!(!background.is_running());
        background.start(|| 42).unwrap();
        assert!(background.is_running());
        let result = loop {
            match background.poll() {
                Job::Running => std::thread::sleep(Duration::from_millis(1)),
                other => break other,
            }
        };
        assert_eq!(result, Job::Done(42));
        assert!(!background.is_running());
        assert_eq!(background.poll(), Job::Idle);
    }

    #[test]
    fn a_job_that_panics_is_reported_dead() {
        let mut background = Background::<()>::new("test-panic");
        background.start(|| panic!("on purpose")).unwrap();
        let result = loop {
            match background.poll() {
                Job::Running => std::thread::sleep(Duration::from_millis(1)),
                other => break other,
            }
        };
        assert_eq!(result, Job::Died);
    }
}
