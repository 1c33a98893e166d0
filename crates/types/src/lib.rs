//! The vocabulary every stage of Weir shares, so that no stage imports another for it: errors
//! ([`error`]), what a request is for ([`format`]), the request and response as they pass the
//! phases ([`exchange`]), JSON bodies read without building a tree ([`json`]), bounded body
//! reading ([`body`]) and the secret values that must never leave the gateway ([`secrets`]).

pub mod affinity;
pub mod body;
pub mod canonical;
pub mod error;
pub mod exchange;
pub mod format;
pub mod json;
pub mod relay;
pub mod secrets;
pub mod trace;

use weir_config as config;
