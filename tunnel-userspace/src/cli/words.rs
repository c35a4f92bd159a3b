//! The words `ip tunnel` knows, offered to shell completion: a value
//! parser that takes any word (the grammar is read later, as `ip` reads
//! it) but tells clap_complete the keywords and modes.

use std::ffi::OsStr;

use clap::{
    builder::{PossibleValue, TypedValueParser},
    error::ErrorKind,
    Arg, Command, Error,
};

/// Any word; completes to the words of `0`.
#[derive(Clone, Copy, Debug)]
pub struct Words(pub &'static [&'static str]);

impl TypedValueParser for Words {
    type Value = String;

    fn parse_ref(&self, cmd: &Command, _arg: Option<&Arg>, value: &OsStr) -> Result<String, Error> {
        value
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| Error::new(ErrorKind::InvalidUtf8).with_cmd(cmd))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.0.iter().map(|w| PossibleValue::new(*w))))
    }
}
