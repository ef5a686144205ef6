//! `qlarius-env keygen`: a random key, base64-encoded, from the operating system's secure
//! random source.

use crate::error::Error;
use base64::Engine;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use std::io::IsTerminal;
use zeroize::Zeroizing;

const AFTER_HELP: &str = "\
The key is standard base64 with padding (the alphabet A-Z a-z 0-9 + / and =), the format
of Elixir's Base.encode64 and of Cloak keys. The bytes come from getrandom(2).

A newline follows the key only when standard output is a terminal, so that
$(qlarius-env keygen) and pipes get the key alone.

Examples:
   qlarius-env keygen
   qlarius-env keygen --bytes 64
   qlarius-env put /qlarius/cloak-key --generate 32    # store a key without seeing it";

/// Smallest key accepted: 16 bytes is 128 bits.
pub const MIN_BYTES: usize = 16;
/// Largest key accepted. Its base64 form (5,464 characters) fits an Advanced-tier value.
pub const MAX_BYTES: usize = 4096;

/// Print a new random key, base64-encoded.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct KeygenArgs {
    /// Length of the key in bytes, before base64 encoding (16 to 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 32, value_parser = parse_key_length)]
    pub bytes: usize,
}

pub fn run(args: KeygenArgs) -> Result<(), Error> {
    let key = generate_key(args.bytes)?;
    let newline = if std::io::stdout().is_terminal() { "\n" } else { "" };
    let text = Zeroizing::new(format!("{}{newline}", key.expose_secret()));
    super::write_stdout(&text)
}

/// Returns `bytes` random bytes from the operating system, base64-encoded.
pub fn generate_key(bytes: usize) -> Result<SecretString, Error> {
    let mut raw = Zeroizing::new(vec![0u8; bytes]);
    getrandom::fill(&mut raw)
        .map_err(|e| Error::Internal(format!("the operating system's random source failed: {e}")))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&*raw);
    Ok(SecretString::from(encoded))
}

/// Parses `--bytes` and `--generate`.
pub fn parse_key_length(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("expected a whole number of bytes, from {MIN_BYTES} to {MAX_BYTES}"))?;
    if !(MIN_BYTES..=MAX_BYTES).contains(&bytes) {
        return Err(format!("must be from {MIN_BYTES} to {MAX_BYTES} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_decodes_to_requested_length() {
        for bytes in [MIN_BYTES, 32, 33, MAX_BYTES] {
            let key = generate_key(bytes).unwrap();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(key.expose_secret())
                .unwrap();
            assert_eq!(decoded.len(), bytes);
        }
    }

    #[test]
    fn keys_differ() {
        let first = generate_key(32).unwrap();
        let second = generate_key(32).unwrap();
        assert_ne!(first.expose_secret(), second.expose_secret());
    }

    #[test]
    fn key_length_bounds() {
        assert_eq!(parse_key_length("32"), Ok(32));
        assert!(parse_key_length("15").is_err());
        assert!(parse_key_length("4097").is_err());
        assert!(parse_key_length("-1").is_err());
        assert!(parse_key_length("lots").is_err());
    }
}
