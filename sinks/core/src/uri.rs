//! Sink URIs: the query parameters the router and every transport read the same way, and the
//! form of a URI that is safe to log.

/// One `key=value` query parameter: the value percent-decoded, and the pair as written, for
/// handing on untouched what the reader does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    pub key: &'a str,
    pub value: String,
    pub raw: &'a str,
}

/// Percent-decodes `text`, which must then be UTF-8.
pub fn decode(text: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("{text:?} is not UTF-8 once percent-decoded"))
}

/// The parameters of a query string (without the `?`), in order; an error names the key.
pub fn params(query: &str) -> Result<Vec<Param<'_>>, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|raw| {
            let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
            let value = decode(value).map_err(|m| format!("{key}: {m}"))?;
            Ok(Param { key, value, raw })
        })
        .collect()
}

/// `base` with the kept parameters as its query again.
pub fn with_query(base: &str, kept: &[&str]) -> String {
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}
/// The router's own query parameters, shown for every sink (no transport reads them).
pub const ROUTER_PARAMETERS: [&str; 4] = ["types", "namespaces", "pipelines", "name"];

/// A sink URI fit for logs, showing only the router's parameters (see [`redact_with`]).
pub fn redact(uri: &str) -> String {
    redact_with(uri, &[])
}

/// A sink URI fit for logs: user-info becomes `***@`, and query values become `***` unless the
/// parameter is the router's or one of `shown`, the sink's harmless options (an endpoint's own
/// `?code=…` may well be a secret).
pub fn redact_with(uri: &str, shown: &[&str]) -> String {
    let (base, query) = match uri.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (uri, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let query = query.split('#').next().unwrap_or("");
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if !ROUTER_PARAMETERS.contains(&key) && !shown.contains(&key) => {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_values_and_keep_the_raw_pair() {
        let got = params("a=1&&b=x%20y&flag").expect("parses");
        assert_eq!(
            got,
            [
                Param {
                    key: "a",
                    value: "1".into(),
                    raw: "a=1"
                },
                Param {
                    key: "b",
                    value: "x y".into(),
                    raw: "b=x%20y"
                },
                Param {
                    key: "flag",
                    value: String::new(),
                    raw: "flag"
                },
            ]
        );
        assert!(params("k=%FF").expect_err("not UTF-8").starts_with("k: "));
        assert_eq!(with_query("http://h/p", &["b=x%20y"]), "http://h/p?b=x%20y");
        assert_eq!(with_query("http://h/p", &[]), "http://h/p");
    }
}
