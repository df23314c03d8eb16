//! The policy parser and validator on arbitrary input: any text gets a policy or an
//! error, never a panic, and every error says where and how to fix it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(err) = probe_user::policy::parse(text, "fuzz.yaml") {
        let message = err.to_string();
        assert!(message.starts_with("fuzz.yaml"), "error without its source: {message}");
    }
});
