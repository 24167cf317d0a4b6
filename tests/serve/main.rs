//! `zt serve` end to end: the real binary started as a process on a free
//! loopback port with fixture models, driven over real sockets.

#![cfg(feature = "server")]

mod batch;
mod cache;
#[path = "../common/mod.rs"]
mod common;
mod connect;
mod errors;
mod execute;
mod grammar;
mod harness;
mod load;
mod openai;
mod real;
mod states;
