//! A pushed app.json, and the cron schedules in it.
#![no_main]
use gearshift_fuzz::ingear::{appjson, cron};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(app) = appjson::parse(text) {
        let _ = cron::jobs(std::path::Path::new("/nonexistent-gearshift-fuzz"), &app);
    }
    // The text as one schedule.
    let line = format!(r#"{{"cron": [{{"command": "true", "schedule": {}}}]}}"#, serde_json::Value::from(text));
    if let Ok(app) = appjson::parse(&line) {
        let _ = cron::jobs(std::path::Path::new("/nonexistent-gearshift-fuzz"), &app);
    }
});
