//! A public key line as `user add --key` and `keys add` take it: never a panic, and a key that
//! parses writes a line that parses to the same key and fingerprint.
#![no_main]
use gearshift_fuzz::ssh::key::PublicKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Ok(k) = PublicKey::parse(line) {
        let again = PublicKey::parse(&k.to_line()).expect("a key's own line must parse");
        assert_eq!(again.fingerprint(), k.fingerprint());
        assert_eq!(again.blob(), k.blob());
    }
});
