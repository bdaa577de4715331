//! Arbitrary attributes, secrets and permission through Mount request parsing and the driver's path
//! rules: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openclaw_csi_provider::proto;
use openclaw_csi_provider::request::MountRequest;
use openclaw_csi_provider::response::validate_file_path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{1}');
    let attributes = parts.next().unwrap_or_default().to_string();
    let secrets = parts.next().unwrap_or("null").to_string();
    let permission = parts.next().unwrap_or("420").to_string();
    let _ = validate_file_path(&attributes);
    let _ = openclaw_csi_provider::file_mode::FileMode::parse(&permission);
    let _ = MountRequest::from_proto(proto::MountRequest {
        attributes,
        secrets,
        target_path: String::new(),
        permission,
        current_object_version: vec![],
    });
});
