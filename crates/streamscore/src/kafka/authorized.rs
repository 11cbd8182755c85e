//! What the broker says the configured principal may do with a topic
//! (KIP-430: DescribeTopics with `include_authorized_operations`).
//!
//! Metadata tells whether a topic may be described, not whether it may be
//! written: a principal granted Read on an output topic (Read implies
//! Describe) passes the metadata check, and its first record there is
//! refused only when the partition joins a transaction, in an error that
//! names no topic. Asking for the authorized operations turns that into a
//! refusal to start naming the topic and the operation.
//!
//! rust-rdkafka's admin client does not wrap DescribeTopics; this is the C
//! call behind one safe function.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::types::RDKafkaErrorCode;

/// An operation a principal may perform on a topic, as librdkafka numbers it
/// (`rd_kafka_AclOperation_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Operation(u32);

impl Operation {
    pub(crate) const READ: Operation =
        Operation(rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_READ as u32);
    #[cfg(test)]
    pub(crate) const DESCRIBE: Operation =
        Operation(rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_DESCRIBE as u32);
    pub(crate) const WRITE: Operation =
        Operation(rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_WRITE as u32);

    /// The name kafka-acls uses for it.
    pub(crate) fn name(self) -> &'static str {
        use rd::rd_kafka_AclOperation_t as Op;
        const NAMES: [(Op, &str); 12] = [
            (Op::RD_KAFKA_ACL_OPERATION_ANY, "Any"),
            (Op::RD_KAFKA_ACL_OPERATION_ALL, "All"),
            (Op::RD_KAFKA_ACL_OPERATION_READ, "Read"),
            (Op::RD_KAFKA_ACL_OPERATION_WRITE, "Write"),
            (Op::RD_KAFKA_ACL_OPERATION_CREATE, "Create"),
            (Op::RD_KAFKA_ACL_OPERATION_DELETE, "Delete"),
            (Op::RD_KAFKA_ACL_OPERATION_ALTER, "Alter"),
            (Op::RD_KAFKA_ACL_OPERATION_DESCRIBE, "Describe"),
            (Op::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION, "ClusterAction"),
            (
                Op::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
                "DescribeConfigs",
            ),
            (Op::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS, "AlterConfigs"),
            (
                Op::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
                "IdempotentWrite",
            ),
        ];
        NAMES
            .iter()
            .find(|(op, _)| *op as u32 == self.0)
            .map_or("Unknown", |(_, name)| name)
    }
}

/// Why the broker's answer could not be had; the caller decides whether that
/// matters (for the start-time check it does not: the broker may predate
/// KIP-430, or be librdkafka's mock cluster).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unanswered(String);

/// The operations the broker grants the client's principal on each of
/// `topics`, by name. A topic is absent where the broker did not say (an
/// error for that topic, or a broker that does not report them).
pub(crate) fn topic_operations<C: ClientContext>(
    client: &Client<C>,
    topics: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, Vec<Operation>>, Unanswered> {
    let names: Vec<CString> = topics
        .iter()
        .map(|t| CString::new(*t).map_err(|_| Unanswered(format!("topic name {t:?} holds a NUL"))))
        .collect::<Result<_, _>>()?;
    let mut pointers: Vec<*const std::ffi::c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = client.native_ptr();
    // SAFETY: `rk` is the live handle of `client`, borrowed for this call.
    // Every object created here (the topic collection, which copies the
    // names; the options; the queue; the result event) is destroyed exactly
    // once before returning, on every path. The descriptions and their
    // operation arrays belong to the event and are read before it is
    // destroyed; the operations are read as integers, never as the enum, so
    // a value this binding does not know cannot make an invalid enum. A
    // request still in flight when the poll gives up holds its own reference
    // to the queue, so destroying ours is safe.
    unsafe {
        let collection =
            rd::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len());
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut errstr = [0 as std::ffi::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            millis,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let set = rd::rd_kafka_AdminOptions_set_include_authorized_operations(options, 1);
        if !set.is_null() {
            rd::rd_kafka_error_destroy(set);
        }
        let queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_DescribeTopics(rk, collection, options, queue);
        // The request times out on its own after `timeout`; the margin lets
        // that answer arrive instead of our giving up first.
        let event = rd::rd_kafka_queue_poll(queue, millis.saturating_add(1000));
        let answer = read_answer(event);
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_TopicCollection_destroy(collection);
        answer
    }
}

/// Reads a DescribeTopics result event.
///
/// # Safety
/// `event` is NULL or a live event that outlives this call.
unsafe fn read_answer(
    event: *mut rd::rd_kafka_event_t,
) -> Result<BTreeMap<String, Vec<Operation>>, Unanswered> {
    if event.is_null() {
        return Err(Unanswered("no answer within the request timeout".into()));
    }
    // SAFETY: the caller's contract; every pointer read below belongs to the event.
    unsafe {
        let code = rd::rd_kafka_event_error(event);
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            let text = text_of(rd::rd_kafka_event_error_string(event));
            return Err(Unanswered(format!(
                "{}: {text}",
                RDKafkaErrorCode::from(code)
            )));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event);
        if result.is_null() {
            return Err(Unanswered("not a DescribeTopics result".into()));
        }
        let mut count = 0usize;
        let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        let mut granted = BTreeMap::new();
        for i in 0..count {
            let description = *descriptions.add(i);
            if !rd::rd_kafka_TopicDescription_error(description).is_null() {
                continue;
            }
            let mut n = 0usize;
            let operations =
                rd::rd_kafka_TopicDescription_authorized_operations(description, &mut n);
            if operations.is_null() || n == 0 {
                continue;
            }
            let raw = operations.cast::<u32>();
            let operations = (0..n).map(|j| Operation(*raw.add(j))).collect();
            granted.insert(
                text_of(rd::rd_kafka_TopicDescription_name(description)),
                operations,
            );
        }
        Ok(granted)
    }
}

/// # Safety
/// `ptr` is NULL or a NUL-terminated string alive for this call.
unsafe fn text_of(ptr: *const std::ffi::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}
