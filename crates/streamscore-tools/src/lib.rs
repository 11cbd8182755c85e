//! Tools around the streamscore processor, kept out of it so the production
//! binary and image carry none of their code: the embedded demo, the
//! end-to-end benchmark, the upstream producer (`produce`), the independent
//! exactly-once verifier, topic creation, and the synthetic event factory
//! they share. docs/design.md, "Layout".
//!
//! Each tool is a public module; what each exposes is chosen there, the rest
//! is `pub(crate)` (`unreachable_pub` warns).

#![warn(unreachable_pub)]

pub mod admin;
pub mod batching;
pub mod bench;
pub mod demo;
pub mod events;
pub mod inference;
pub mod produce;
pub mod publish;
pub mod verify;
