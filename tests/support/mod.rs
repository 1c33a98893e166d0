//! Test harness: start `weir` with a config, a mock upstream provider, helpers.
