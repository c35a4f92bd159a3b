//! Output conventions shared by every show command: iproute2-like text by
//! default, `-j` for JSON (one document per command), `-p` to pretty-print it.

use serde::{ser::SerializeMap as _, Serialize, Serializer};
use serde_json::Value;

#[derive(Clone, Copy, Debug, Default)]
pub struct Format {
    pub json: bool,
    pub pretty: bool,
    /// `-o`: each record on one line, its line breaks printed as `\`.
    pub oneline: bool,
    /// `-d`: xtun's own details after what `ip` prints.
    pub details: bool,
}

impl Format {
    pub fn print_json(&self, value: &impl Serialize) {
        let text = if self.pretty {
            serde_json::to_string_pretty(value)
        } else {
            serde_json::to_string(value)
        };
        println!("{}", text.expect("JSON values always serialize"));
    }

    /// Prints one text record, its continuation lines joined with `\`
    /// under `-o`, as `ip -o` joins them.
    pub fn print_record(&self, record: &str) {
        if self.oneline {
            println!("{}", record.replace('\n', "\\"));
        } else {
            println!("{record}");
        }
    }
}

/// A JSON object whose fields keep the order they were added in (as `ip
/// -j` prints them), which serde_json's own map sorts.
#[derive(Debug, Default)]
pub struct Ordered(Vec<(&'static str, Value)>);

impl Ordered {
    pub fn push(&mut self, key: &'static str, value: impl Into<Value>) {
        self.0.push((key, value.into()));
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Lower-case hex of a byte slice, space-separated per byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
