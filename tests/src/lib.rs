//! Shared harness for the integration tests: mock upstreams and a gateway bound to 127.0.0.1:0.
