//! End-to-end tests against real `cairn` processes.

mod bad_input;
mod crash;
mod prometheus;
