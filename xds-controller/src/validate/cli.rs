//! The `aigw validate` command: reads files, prints one verdict per document.

use super::{validate_str, Verdict};
use std::path::PathBuf;

/// The lines `aigw validate` prints for one file's text: `FILE: verdict`,
/// or `FILE (document N): verdict` when the file holds several documents.
pub fn report(file: &str, text: &str) -> (Vec<String>, usize) {
    let verdicts = validate_str(text);
    let invalid = verdicts.iter().filter(|v| v.is_invalid()).count();
    let lines = match verdicts.as_slice() {
        [] => vec![format!("{file}: valid (no documents)")],
        [one] => vec![format!("{file}: {one}")],
        many => many
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{file} (document {}): {v}", i + 1))
            .collect(),
    };
    (lines, invalid)
}

/// Prints a verdict per document; fails when any document is invalid.
pub fn command(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut invalid = 0;
    for file in files {
        let name = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let (lines, bad) = report(&name, &text);
                for line in lines {
                    println!("{line}");
                }
                invalid += bad;
            }
            Err(e) => {
                println!("{name}: {}", Verdict::Invalid(format!("cannot read: {e}")));
                invalid += 1;
            }
        }
    }
    if invalid > 0 {
        anyhow::bail!("{invalid} document(s) invalid");
    }
    Ok(())
}
