//! Faults a test can arm in a running pipeline, for the failures the real
//! broker cannot be made to produce on cue: an abortable error at the next
//! commit (as a rebalance's ILLEGAL_GENERATION would give), a commit whose
//! answer never comes back (as a broker that hangs right after writing the
//! commit would give; or after it aborted), a commit held at its start while the test hangs the
//! broker (so the commit is the call that meets the hang, not a delivery
//! wait before it), a group coordinator whose answer is stale (as one
//! failing over gave), or an ONNX Runtime error in the middle of a run (as
//! a GPU fault would give).
//!
//! Nothing arms them outside tests; disarmed, each costs one relaxed load
//! per commit or per batch.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Faults {
    abort_commits: AtomicU32,
    lose_commit_reply: AtomicBool,
    fail_inference: AtomicBool,
    hold_commit: AtomicBool,
    commit_held: AtomicBool,
    commit_released: AtomicBool,
    stale_group_answer: AtomicBool,
    abort_silently: AtomicBool,
}

impl Faults {
    /// The next `n` commits fail as if the broker had refused them with an
    /// abortable error.
    pub fn abort_next_commits(&self, n: u32) {
        self.abort_commits.store(n, Ordering::SeqCst);
    }

    /// Commits still to fail.
    pub fn commits_to_abort(&self) -> u32 {
        self.abort_commits.load(Ordering::SeqCst)
    }

    /// The next commit that succeeds is taken for one that timed out: the
    /// sink cannot tell whether it landed.
    pub fn lose_next_commit_reply(&self) {
        self.lose_commit_reply.store(true, Ordering::SeqCst);
    }

    /// Whether an armed lost reply is still to be taken.
    pub fn commit_reply_to_lose(&self) -> bool {
        self.lose_commit_reply.load(Ordering::SeqCst)
    }

    /// The next commit is aborted instead, and taken for one that timed
    /// out: the sink must find that it did not land.
    pub fn abort_next_commit_and_lose_its_answer(&self) {
        self.abort_silently.store(true, Ordering::SeqCst);
    }

    /// Whether an armed silent abort is still to be taken.
    pub fn silent_abort_armed(&self) -> bool {
        self.abort_silently.load(Ordering::SeqCst)
    }

    /// After the next lost commit answer, the group coordinator is taken to
    /// answer with the offsets of the commit before, as a coordinator that
    /// was failing over answered in a three-node run with two nodes down.
    pub fn answer_stale_from_group_next(&self) {
        self.stale_group_answer.store(true, Ordering::SeqCst);
    }

    /// The next batch reaches ONNX Runtime with a shape the model refuses,
    /// so the inference call itself fails.
    pub fn fail_next_inference(&self) {
        self.fail_inference.store(true, Ordering::SeqCst);
    }

    /// The next commit stops just before its commit call until
    /// [`Faults::release_held_commit`] (or a minute has passed).
    pub fn hold_next_commit(&self) {
        self.commit_released.store(false, Ordering::SeqCst);
        self.commit_held.store(false, Ordering::SeqCst);
        self.hold_commit.store(true, Ordering::SeqCst);
    }

    /// Waits until an armed hold has stopped a commit; false if none came.
    pub fn wait_for_held_commit(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.commit_held.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Lets the held commit go on.
    pub fn release_held_commit(&self) {
        self.commit_released.store(true, Ordering::SeqCst);
    }

    /// In the sink, before its commit call: waits here while a test holds it.
    pub(crate) fn pause_if_commit_held(&self) {
        if !take(&self.hold_commit) {
            return;
        }
        self.commit_held.store(true, Ordering::SeqCst);
        let give_up = Instant::now() + Duration::from_secs(60);
        while !self.commit_released.load(Ordering::SeqCst) && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Takes one armed commit failure, if any.
    pub(crate) fn take_commit_abort(&self) -> bool {
        self.abort_commits.load(Ordering::Relaxed) > 0
            && self
                .abort_commits
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    pub(crate) fn take_lost_commit_reply(&self) -> bool {
        take(&self.lose_commit_reply)
    }

    pub(crate) fn take_silent_abort(&self) -> bool {
        take(&self.abort_silently)
    }

    pub(crate) fn take_stale_group_answer(&self) -> bool {
        take(&self.stale_group_answer)
    }

    pub(crate) fn take_inference_failure(&self) -> bool {
        take(&self.fail_inference)
    }
}

/// Reads before it writes: the disarmed case stays a shared cache line.
fn take(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_commit_aborts_are_taken_one_at_a_time() {
        let f = Faults::default();
        assert!(!f.take_commit_abort());
        f.abort_next_commits(2);
        assert!(f.take_commit_abort());
        assert!(f.take_commit_abort());
        assert!(!f.take_commit_abort());
        f.fail_next_inference();
        assert!(f.take_inference_failure());
        assert!(!f.take_inference_failure());
        f.lose_next_commit_reply();
        assert!(f.take_lost_commit_reply());
        assert!(!f.take_lost_commit_reply());
    }
}
