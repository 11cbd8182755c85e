//! Leaving the consumer group on a clean stop as a static member.
//!
//! librdkafka 2.12 has no admin call that removes a static member
//! (RemoveMembersFromConsumerGroup, KIP-345) and no close option that leaves
//! (KIP-812's `CloseOptions.leaveGroup`): its close skips the LeaveGroup of a
//! static member by design. It does send one when a static member
//! unsubscribes *before* the close, and waits for its answer during the close
//! (the group handle stays until the leave is answered). So leaving is:
//! unsubscribe, serve the revocation until librdkafka has sent the leave (it
//! clears the member id as it does), then close. Going through the client
//! keeps the consumer's own connection, TLS and SASL settings.

use std::ffi::CStr;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// Unsubscribes and polls until librdkafka has sent the LeaveGroup (true), or
/// `within` has passed (false: the group drops the member after its session
/// timeout instead). Records still fetched meanwhile are dropped unread: their
/// offsets were never committed, the next owner reads them.
pub(crate) fn leave<C: ConsumerContext>(consumer: &BaseConsumer<C>, within: Duration) -> bool {
    consumer.unsubscribe();
    let deadline = Instant::now() + within;
    loop {
        // Serves the revocation callback, after which librdkafka leaves.
        drop(consumer.poll(Duration::from_millis(50)));
        if member_id(consumer).is_none_or(|id| id.is_empty()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// The member id the group coordinator gave this consumer; empty before it
/// joined and once it has left. rust-rdkafka does not wrap `rd_kafka_memberid`.
fn member_id<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<String> {
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live handle of `consumer`, borrowed for this call;
    // rd_kafka_memberid asks the group thread for a copy of the id (thread
    // safe) and returns NULL or a NUL-terminated string that we own and hand
    // back to librdkafka's allocator exactly once.
    unsafe {
        let ptr = rdkafka::bindings::rd_kafka_memberid(rk);
        if ptr.is_null() {
            return None;
        }
        let id = CStr::from_ptr(ptr).to_string_lossy().into_owned();
        rdkafka::bindings::rd_kafka_mem_free(rk, ptr.cast());
        Some(id)
    }
}
