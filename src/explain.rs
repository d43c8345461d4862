//! `specreplay explain`: find, minimize and print an input on which a builder variant
//! disagrees with the reference (the search lives in `specreplay_sim::builders::search`).
//!
//! Exit-code convention for the caller: `Ok((true, report))` → print, exit 0 (a
//! counterexample was found); `Ok((false, report))` → print, exit 1 (none found);
//! `Err(msg)` → print the one-line message, exit 2 (unknown builder or variant).

use specreplay_sim::builders::search;

/// The text of `specreplay explain --list`: every builder and its variants.
pub fn list() -> String {
    search::list_text()
}

/// Searches up to `budget_cases` random cases from `seed`; returns
/// `(found_counterexample, report_text)`, or `Err(one-line message)` for an unknown
/// builder or variant.
pub fn explain(builder: &str, variant: &str, budget_cases: u64, seed: u64) -> Result<(bool, String), String> {
    let e = search::explain(builder, variant, budget_cases, seed)?;
    Ok((e.found, e.report))
}
