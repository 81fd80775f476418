//! Windows: `--udp` is refused at bind with a clear error until the Windows models serve UDP
//! (the next step of issue #8), rather than silently serving TCP alone.
#![cfg(windows)]

use iomodels_server::{Model, Server, ServerConfig};

#[test]
fn udp_is_refused_at_bind_until_windows_serves_it() {
    for model in Model::available() {
        let config = ServerConfig {
            model,
            listen: "127.0.0.1:0".parse().unwrap(),
            udp: true,
            ..ServerConfig::default()
        };
        let err = match Server::bind(config) {
            Ok(_) => panic!("{model}: --udp was accepted on Windows"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("UDP is not implemented on Windows yet"),
            "{model}: {err}"
        );
    }
}
