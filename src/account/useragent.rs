//! A short, human name for a browser from its `User-Agent` ("Firefox on Linux"), for the
//! sessions page. Parsing is woothee's (a maintained cross-language dataset); this only
//! decides what to show.

/// "Firefox on Linux", "Chrome on Android", or "Unknown browser".
pub fn label(user_agent: &str) -> String {
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let known = |s: &str| !s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN;
    match parsed {
        Some(r) if known(r.name) && known(r.os) => format!("{} on {}", r.name, os_family(r.os)),
        Some(r) if known(r.name) => r.name.to_string(),
        _ => "Unknown browser".into(),
    }
}

/// Woothee names Windows and macOS by release ("Windows 10", "Mac OSX"); the family is
/// what a person recognises their device by.
fn os_family(os: &str) -> &str {
    if os.starts_with("Windows") {
        "Windows"
    } else if os.starts_with("Mac") {
        "macOS"
    } else {
        os
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn common_browsers_get_short_names() {
        assert_eq!(
            label("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
            "Firefox on Linux"
        );
        assert_eq!(
            label(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
            ),
            "Chrome on Windows"
        );
        assert_eq!(
            label(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
            ),
            "Safari on macOS"
        );
    }

    #[test]
    fn unknown_agents_say_so() {
        assert_eq!(label(""), "Unknown browser");
        assert_eq!(label("keyward-tests/1.0"), "Unknown browser");
    }
}
